/* ort_c: the pose prior from C11 through the onnxruntime C API.
 *
 *   ort_c MODEL_DIR INPUT_FILE OUTPUT_FILE
 *
 * Runs log_prob.onnx and log_prob_grad.onnx on the poses, sample.onnx and latent_forward.onnx on z, and
 * latent_vjp.onnx on (z, the poses as the pose-space cotangent grad_poses) when the model has it (models
 * exported before it do not: a note on stderr), and writes every output as "graph/output_name" (formats:
 * pp_io.h). Input and output names are read from each session; each input's rank and fixed dimensions are
 * checked against the file's arrays.
 */
#include "onnxruntime_c_api.h"
#include "pp_io.h"

static const OrtApi *ort;

/* Every C API call returns NULL or an OrtStatus that owns the error message. */
static void check(OrtStatus *status, const char *what) {
  if (!status) return;
  char msg[1024];
  snprintf(msg, sizeof msg, "%s", ort->GetErrorMessage(status));
  ort->ReleaseStatus(status);
  pp_die("%s failed: %s", what, msg);
}
#define CHECK(call) check((call), #call)

/* One array the program feeds to a graph input. */
typedef struct {
  float *data;
  const int64_t *shape;
  size_t rank;
} input_array;

/* The session's float input `index` must have `rank` dims, and each fixed one must equal shape[i]. */
static void check_input(OrtSession *session, const char *graph, size_t index, const int64_t *shape, size_t rank) {
  OrtTypeInfo *type;
  const OrtTensorTypeAndShapeInfo *info;
  ONNXTensorElementDataType elem;
  size_t ndim;
  int64_t dims[8];
  CHECK(ort->SessionGetInputTypeInfo(session, index, &type));
  CHECK(ort->CastTypeInfoToTensorInfo(type, &info));
  if (!info) pp_die("%s: input %zu is not a tensor", graph, index);
  CHECK(ort->GetTensorElementType(info, &elem));
  CHECK(ort->GetDimensionsCount(info, &ndim));
  if (elem != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) pp_die("%s: input %zu is not float32", graph, index);
  if (ndim != rank)
    pp_die("%s: input %zu has rank %zu, the input file gives rank %zu", graph, index, ndim, rank);
  CHECK(ort->GetDimensions(info, dims, ndim));
  for (size_t i = 0; i < ndim; i++)
    if (dims[i] > 0 && dims[i] != shape[i])  /* symbolic dims (batch) read as -1 */
      pp_die("%s: input %zu dim %zu is %lld in the graph, %lld in the input file", graph, index, i,
             (long long)dims[i], (long long)shape[i]);
  ort->ReleaseTypeInfo(type);
}

static int file_exists(const char *path) {
  FILE *probe = fopen(path, "rb");
  if (probe) fclose(probe);
  return probe != NULL;
}

/* Runs DIR/graph.onnx on its n_in inputs (in the graph's input order) and writes every output. */
static void run_graph(OrtEnv *env, const OrtSessionOptions *opts, const char *model_dir, const char *graph,
                      const input_array *in, size_t n_in) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s.onnx", model_dir, graph);
  if (!file_exists(path)) pp_die("model file not found: %s", path);

  OrtSession *session;
  OrtAllocator *alloc;
  OrtMemoryInfo *mem;
  OrtValue *inputs[4] = {NULL};
  char *in_names[4];
  char *out_names[8];
  OrtValue *outputs[8] = {NULL};
  size_t n_out, count;

  CHECK(ort->CreateSession(env, path, opts, &session));
  CHECK(ort->SessionGetInputCount(session, &count));
  if (count != n_in || n_in > 4) pp_die("%s: expected %zu inputs, the graph has %zu", graph, n_in, count);
  CHECK(ort->GetAllocatorWithDefaultOptions(&alloc));
  CHECK(ort->SessionGetOutputCount(session, &n_out));
  if (n_out == 0 || n_out > 8) pp_die("%s: unexpected number of outputs %zu", graph, n_out);
  for (size_t i = 0; i < n_out; i++) CHECK(ort->SessionGetOutputName(session, i, alloc, &out_names[i]));

  /* Each input tensor wraps our buffer (no copy); ORT allocates the outputs. */
  CHECK(ort->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &mem));
  for (size_t k = 0; k < n_in; k++) {
    size_t n = 1;
    for (size_t i = 0; i < in[k].rank; i++) n *= (size_t)in[k].shape[i];
    check_input(session, graph, k, in[k].shape, in[k].rank);
    CHECK(ort->SessionGetInputName(session, k, alloc, &in_names[k]));
    CHECK(ort->CreateTensorWithDataAsOrtValue(mem, in[k].data, n * sizeof(float), in[k].shape, in[k].rank,
                                              ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &inputs[k]));
  }
  CHECK(ort->Run(session, NULL, (const char *const *)in_names, (const OrtValue *const *)inputs, n_in,
                 (const char *const *)out_names, n_out, outputs));

  for (size_t i = 0; i < n_out; i++) {
    OrtTensorTypeAndShapeInfo *info;
    ONNXTensorElementDataType elem;
    size_t ndim;
    int64_t dims[8];
    float *values;
    CHECK(ort->GetTensorTypeAndShape(outputs[i], &info));
    CHECK(ort->GetTensorElementType(info, &elem));
    CHECK(ort->GetDimensionsCount(info, &ndim));
    if (elem != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || ndim > 8) pp_die("%s/%s: not a float32 tensor", graph,
                                                                       out_names[i]);
    CHECK(ort->GetDimensions(info, dims, ndim));
    CHECK(ort->GetTensorMutableData(outputs[i], (void **)&values));
    pp_write_array(graph, out_names[i], dims, ndim, values);
    ort->ReleaseTensorTypeAndShapeInfo(info);
    ort->ReleaseValue(outputs[i]);
    CHECK(ort->AllocatorFree(alloc, out_names[i]));
  }
  for (size_t k = 0; k < n_in; k++) {
    CHECK(ort->AllocatorFree(alloc, in_names[k]));
    ort->ReleaseValue(inputs[k]);
  }
  ort->ReleaseMemoryInfo(mem);
  ort->ReleaseSession(session);
}

int main(int argc, char **argv) {
  pp_prog = "ort_c";
  if (argc != 4) {
    fprintf(stderr, "usage: %s MODEL_DIR INPUT_FILE OUTPUT_FILE\n", argv[0]);
    return 2;
  }
  /* Headers of API version N run on any library >= N; an older library returns NULL here. */
  ort = OrtGetApiBase()->GetApi(ORT_API_VERSION);
  if (!ort) pp_die("onnxruntime %s does not provide C API version %d", OrtGetApiBase()->GetVersionString(),
                   ORT_API_VERSION);
  fprintf(stderr, "ort_c: onnxruntime %s (headers: API %d)\n", OrtGetApiBase()->GetVersionString(),
          ORT_API_VERSION);

  pp_input in = pp_read_input(argv[2]);
  const int64_t poses_shape[3] = {in.batch, in.joints, in.channels}, z_shape[2] = {in.batch, in.dim};

  OrtEnv *env;
  OrtSessionOptions *opts;
  CHECK(ort->CreateEnv(ORT_LOGGING_LEVEL_WARNING, "ort_c", &env));
  CHECK(ort->CreateSessionOptions(&opts));  /* CPU execution provider, default threads */

  const input_array poses = {in.poses, poses_shape, 3}, z = {in.z, z_shape, 2};
  const input_array vjp_inputs[2] = {z, poses};  /* latent_vjp(z, grad_poses): the poses as the cotangent */
  char vjp_path[4096];
  snprintf(vjp_path, sizeof vjp_path, "%s/latent_vjp.onnx", argv[1]);

  pp_open_output(argv[3]);
  run_graph(env, opts, argv[1], "log_prob", &poses, 1);
  run_graph(env, opts, argv[1], "sample", &z, 1);
  run_graph(env, opts, argv[1], "latent_forward", &z, 1);
  run_graph(env, opts, argv[1], "log_prob_grad", &poses, 1);
  if (file_exists(vjp_path))
    run_graph(env, opts, argv[1], "latent_vjp", vjp_inputs, 2);
  else
    fprintf(stderr, "ort_c: %s not found (a model exported before latent_vjp): skipped\n", vjp_path);
  pp_close_output();

  ort->ReleaseSessionOptions(opts);
  ort->ReleaseEnv(env);
  free(in.poses);
  free(in.z);
  return 0;
}
