// ort_cpp: the pose prior from C++17 through the onnxruntime C++ API (onnxruntime_cxx_api.h).
//
//   ort_cpp MODEL_DIR INPUT_FILE OUTPUT_FILE
//
// Same work and output as ort_c (formats: pp_io.h); errors arrive as Ort::Exception instead of OrtStatus.
#include <filesystem>
#include <string>
#include <vector>

#define ORT_API_MANUAL_INIT  // so that a too-old library is an error message, not a crash
#include "onnxruntime_cxx_api.h"
#include "pp_io.h"

static void run_graph(Ort::Env &env, const Ort::SessionOptions &opts, const std::string &model_dir,
                      const char *graph, float *data, std::vector<int64_t> shape) {
  const std::string path = model_dir + "/" + graph + ".onnx";
  if (!std::filesystem::is_regular_file(path)) pp_die("model file not found: %s", path.c_str());
  Ort::Session session(env, path.c_str(), opts);

  // One float32 input whose rank and fixed dims (all but the symbolic batch, which reads -1) match ours.
  if (session.GetInputCount() != 1) pp_die("%s: expected 1 input", graph);
  const Ort::TypeInfo type = session.GetInputTypeInfo(0);  // owns what `info` views: keep it alive
  const auto info = type.GetTensorTypeAndShapeInfo();
  const std::vector<int64_t> want = info.GetShape();
  if (info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || want.size() != shape.size())
    pp_die("%s: the input is not a float32 tensor of rank %zu", graph, shape.size());
  for (size_t i = 0; i < want.size(); i++)
    if (want[i] > 0 && want[i] != shape[i])
      pp_die("%s: input dim %zu is %lld in the graph, %lld in the input file", graph, i, (long long)want[i],
             (long long)shape[i]);

  Ort::AllocatorWithDefaultOptions alloc;
  const Ort::AllocatedStringPtr in_name = session.GetInputNameAllocated(0, alloc);
  std::vector<Ort::AllocatedStringPtr> out_owned;
  std::vector<const char *> out_names;
  for (size_t i = 0; i < session.GetOutputCount(); i++) {
    out_owned.push_back(session.GetOutputNameAllocated(i, alloc));
    out_names.push_back(out_owned.back().get());
  }

  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  const auto mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  const Ort::Value input = Ort::Value::CreateTensor<float>(mem, data, n, shape.data(), shape.size());
  const char *in_names[] = {in_name.get()};
  std::vector<Ort::Value> outputs =
      session.Run(Ort::RunOptions{nullptr}, in_names, &input, 1, out_names.data(), out_names.size());

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

    pp_open_output(argv[3]);
    run_graph(env, opts, argv[1], "log_prob", in.poses, poses_shape);
    run_graph(env, opts, argv[1], "sample", in.z, z_shape);
    run_graph(env, opts, argv[1], "latent_forward", in.z, z_shape);
    run_graph(env, opts, argv[1], "log_prob_grad", in.poses, poses_shape);
    pp_close_output();
    std::free(in.poses);
    std::free(in.z);
  } catch (const std::exception &e) {  // Ort::Exception derives from std::exception
    pp_die("%s", e.what());
  }
  return 0;
}
