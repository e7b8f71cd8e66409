/* ort_c: the pose prior from C11 through the onnxruntime C API.
 *
 *   ort_c MODEL_DIR INPUT_FILE OUTPUT_FILE
 *
 * Runs log_prob.onnx and log_prob_grad.onnx on the poses, sample.onnx and latent_forward.onnx on z, and
 * writes every output as "graph/output_name" (formats: pp_io.h). Input and output names are read from each
 * session; the input's rank and fixed dimensions are checked against the file's arrays.
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

/* The session's single float input must have `rank` dims, and each fixed one must equal shape[i]. */
static void check_input(OrtSession *session, const char *graph, const int64_t *shape, size_t rank) {
  size_t count;
  CHECK(ort->SessionGetInputCount(session, &count));
  if (count != 1) pp_die("%s: expected 1 input, the graph has %zu", graph, count);
  OrtTypeInfo *type;
  const OrtTensorTypeAndShapeInfo *info;
  ONNXTensorElementDataType elem;
  size_t ndim;
  int64_t dims[8];
  CHECK(ort->SessionGetInputTypeInfo(session, 0, &type));
  CHECK(ort->CastTypeInfoToTensorInfo(type, &info));
  if (!info) pp_die("%s: the input is not a tensor", graph);
  CHECK(ort->GetTensorElementType(info, &elem));
  CHECK(ort->GetDimensionsCount(info, &ndim));
  if (elem != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) pp_die("%s: the input is not float32", graph);
  if (ndim != rank) pp_die("%s: the input has rank %zu, the input file gives rank %zu", graph, ndim, rank);
  CHECK(ort->GetDimensions(info, dims, ndim));
  for (size_t i = 0; i < ndim; i++)
    if (dims[i] > 0 && dims[i] != shape[i])  /* symbolic dims (batch) read as -1 */
      pp_die("%s: input dim %zu is %lld in the graph, %lld in the input file", graph, i, (long long)dims[i],
             (long long)shape[i]);
  ort->ReleaseTypeInfo(type);
}

static void run_graph(OrtEnv *env, const OrtSessionOptions *opts, const char *model_dir, const char *graph,
                      float *data, const int64_t *shape, size_t rank) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s.onnx", model_dir, graph);
  FILE *probe = fopen(path, "rb");
  if (!probe) pp_die("model file not found: %s", path);
  fclose(probe);

  OrtSession *session;
  OrtAllocator *alloc;
  OrtMemoryInfo *mem;
  OrtValue *input = NULL;
  char *in_name;
  char *out_names[8];
  OrtValue *outputs[8] = {NULL};
  size_t n_out, n_in = 1;
  for (size_t i = 0; i < rank; i++) n_in *= (size_t)shape[i];

  CHECK(ort->CreateSession(env, path, opts, &session));
  check_input(session, graph, shape, rank);
  CHECK(ort->GetAllocatorWithDefaultOptions(&alloc));
  CHECK(ort->SessionGetInputName(session, 0, alloc, &in_name));
  CHECK(ort->SessionGetOutputCount(session, &n_out));
  if (n_out == 0 || n_out > 8) pp_die("%s: unexpected number of outputs %zu", graph, n_out);
  for (size_t i = 0; i < n_out; i++) CHECK(ort->SessionGetOutputName(session, i, alloc, &out_names[i]));

  /* The input tensor wraps our buffer (no copy); ORT allocates the outputs. */
  CHECK(ort->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &mem));
  CHECK(ort->CreateTensorWithDataAsOrtValue(mem, data, n_in * sizeof(float), shape, rank,
                                            ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &input));
  CHECK(ort->Run(session, NULL, (const char *const *)&in_name, (const OrtValue *const *)&input, 1,
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
  CHECK(ort->AllocatorFree(alloc, in_name));
  ort->ReleaseValue(input);
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

  pp_open_output(argv[3]);
  run_graph(env, opts, argv[1], "log_prob", in.poses, poses_shape, 3);
  run_graph(env, opts, argv[1], "sample", in.z, z_shape, 2);
  run_graph(env, opts, argv[1], "latent_forward", in.z, z_shape, 2);
  run_graph(env, opts, argv[1], "log_prob_grad", in.poses, poses_shape, 3);
  pp_close_output();

  ort->ReleaseSessionOptions(opts);
  ort->ReleaseEnv(env);
  free(in.poses);
  free(in.z);
  return 0;
}
