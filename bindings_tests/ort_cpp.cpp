// ort_cpp: the pose prior from C++17 through the onnxruntime C++ API (onnxruntime_cxx_api.h).
//
//   ort_cpp MODEL_DIR INPUT_FILE OUTPUT_FILE
//
// Same work and output as ort_c (formats: pp_io.h), latent_vjp included (z and the poses as the pose-space
// cotangent, when the model has the graph); errors arrive as Ort::Exception instead of OrtStatus.
#include <filesystem>
#include <string>
#include <vector>

#define ORT_API_MANUAL_INIT  // so that a too-old library is an error message, not a crash
#include "onnxruntime_cxx_api.h"
#include "pp_io.h"

struct InputArray {
  float *data;
  std::vector<int64_t> shape;
};

// Runs MODEL_DIR/graph.onnx on its inputs (in the graph's input order) and writes every output.
static void run_graph(Ort::Env &env, const Ort::SessionOptions &opts, const std::string &model_dir,
                      const char *graph, const std::vector<InputArray> &inputs) {
  const std::string path = model_dir + "/" + graph + ".onnx";
  if (!std::filesystem::is_regular_file(path)) pp_die("model file not found: %s", path.c_str());
  Ort::Session session(env, path.c_str(), opts);
  if (session.GetInputCount() != inputs.size())
    pp_die("%s: expected %zu inputs, the graph has %zu", graph, inputs.size(), session.GetInputCount());

  Ort::AllocatorWithDefaultOptions alloc;
  const auto mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  std::vector<Ort::AllocatedStringPtr> in_owned;
  std::vector<const char *> in_names;
  std::vector<Ort::Value> values;
  for (size_t k = 0; k < inputs.size(); k++) {
    // A float32 input whose rank and fixed dims (all but the symbolic batch, which reads -1) match ours.
    const std::vector<int64_t> &shape = inputs[k].shape;
    const Ort::TypeInfo type = session.GetInputTypeInfo(k);  // owns what `info` views: keep it alive
    const auto info = type.GetTensorTypeAndShapeInfo();
    const std::vector<int64_t> want = info.GetShape();
    if (info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || want.size() != shape.size())
      pp_die("%s: input %zu is not a float32 tensor of rank %zu", graph, k, shape.size());
    for (size_t i = 0; i < want.size(); i++)
      if (want[i] > 0 && want[i] != shape[i])
        pp_die("%s: input %zu dim %zu is %lld in the graph, %lld in the input file", graph, k, i,
               (long long)want[i], (long long)shape[i]);
    in_owned.push_back(session.GetInputNameAllocated(k, alloc));
    in_names.push_back(in_owned.back().get());
    size_t n = 1;
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    values.push_back(Ort::Value::CreateTensor<float>(mem, inputs[k].data, n, shape.data(), shape.size()));
  }

  std::vector<Ort::AllocatedStringPtr> out_owned;
  std::vector<const char *> out_names;
  for (size_t i = 0; i < session.GetOutputCount(); i++) {
    out_owned.push_back(session.GetOutputNameAllocated(i, alloc));
    out_names.push_back(out_owned.back().get());
  }

  std::vector<Ort::Value> outputs = session.Run(Ort::RunOptions{nullptr}, in_names.data(), values.data(),
                                                values.size(), out_names.data(), out_names.size());

  for (size_t i = 0; i < outputs.size(); i++) {
    const auto out_info = outputs[i].GetTensorTypeAndShapeInfo();
    if (out_info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
      pp_die("%s/%s: not a float32 tensor", graph, out_names[i]);
    const std::vector<int64_t> dims = out_info.GetShape();
    pp_write_array(graph, out_names[i], dims.data(), dims.size(), outputs[i].GetTensorData<float>());
  }
}

int main(int argc, char **argv) {
  pp_prog = "ort_cpp";
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s MODEL_DIR INPUT_FILE OUTPUT_FILE\n", argv[0]);
    return 2;
  }
  // Headers of API version N run on any library >= N; an older library returns NULL here.
  const OrtApi *api = OrtGetApiBase()->GetApi(ORT_API_VERSION);
  if (!api) pp_die("onnxruntime %s does not provide C API version %d", OrtGetApiBase()->GetVersionString(),
                   ORT_API_VERSION);
  Ort::InitApi(api);
  try {
    std::fprintf(stderr, "ort_cpp: onnxruntime %s (headers: API %d)\n", Ort::GetVersionString().c_str(),
                 ORT_API_VERSION);
    pp_input in = pp_read_input(argv[2]);
    const std::vector<int64_t> poses_shape{in.batch, in.joints, in.channels}, z_shape{in.batch, in.dim};

    Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "ort_cpp");
    Ort::SessionOptions opts;  // CPU execution provider, default threads

    const InputArray poses{in.poses, poses_shape}, z{in.z, z_shape};
    const std::string vjp_path = std::string(argv[1]) + "/latent_vjp.onnx";

    pp_open_output(argv[3]);
    run_graph(env, opts, argv[1], "log_prob", {poses});
    run_graph(env, opts, argv[1], "sample", {z});
    run_graph(env, opts, argv[1], "latent_forward", {z});
    run_graph(env, opts, argv[1], "log_prob_grad", {poses});
    if (std::filesystem::is_regular_file(vjp_path))
      run_graph(env, opts, argv[1], "latent_vjp", {z, poses});  // latent_vjp(z, grad_poses = the poses)
    else
      std::fprintf(stderr, "ort_cpp: %s not found (a model exported before latent_vjp): skipped\n",
                   vjp_path.c_str());
    pp_close_output();
    std::free(in.poses);
    std::free(in.z);
  } catch (const std::exception &e) {  // Ort::Exception derives from std::exception
    pp_die("%s", e.what());
  }
  return 0;
}
