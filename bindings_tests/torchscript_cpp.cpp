// torchscript_cpp: the pose prior from C++17 on libtorch (the torch wheel's headers and libraries),
// loading the exported TorchScript modules with torch::jit::load.
//
//   torchscript_cpp MODEL_DIR INPUT_FILE OUTPUT_FILE
//
// Runs torchscript/log_prob.pt on the poses, torchscript/sample.pt and torchscript/latent_forward.pt on z
// (there is no TorchScript gradient graph) and writes the outputs like ort_c (formats: pp_io.h).
// TorchScript modules have no output names: the ONNX graphs' names are used, by position.
#include <torch/script.h>

#include <filesystem>
#include <string>
#include <vector>

#include "pp_io.h"

static void run_module(const std::string &model_dir, const char *graph, float *data, std::vector<int64_t> shape,
                       const std::vector<const char *> &out_names) {
  const std::string path = model_dir + "/torchscript/" + graph + ".pt";
  if (!std::filesystem::is_regular_file(path)) pp_die("model file not found: %s", path.c_str());
  torch::jit::Module module = torch::jit::load(path, torch::kCPU);
  module.eval();

  // from_blob wraps our buffer without copying; the modules do not write to their input.
  const at::Tensor input = torch::from_blob(data, shape, torch::kFloat32);
  const c10::IValue result = module.forward({input});
  std::vector<at::Tensor> outputs;
  if (result.isTensor()) {
    outputs.push_back(result.toTensor());
  } else if (result.isTuple()) {
    for (const c10::IValue &v : result.toTupleRef().elements()) outputs.push_back(v.toTensor());
  } else {
    pp_die("%s: forward returned %s, expected a tensor or a tuple of tensors", graph, result.tagKind().c_str());
  }
  if (outputs.size() != out_names.size())
    pp_die("%s: forward returned %zu outputs, expected %zu", graph, outputs.size(), out_names.size());

  for (size_t i = 0; i < outputs.size(); i++) {
    const at::Tensor t = outputs[i].to(torch::kFloat32).contiguous();
    const std::vector<int64_t> dims(t.sizes().begin(), t.sizes().end());
    pp_write_array(graph, out_names[i], dims.data(), dims.size(), t.data_ptr<float>());
  }
}

int main(int argc, char **argv) {
  pp_prog = "torchscript_cpp";
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s MODEL_DIR INPUT_FILE OUTPUT_FILE\n", argv[0]);
    return 2;
  }
  try {
    pp_input in = pp_read_input(argv[2]);
    const std::vector<int64_t> poses_shape{in.batch, in.joints, in.channels}, z_shape{in.batch, in.dim};
    c10::InferenceMode no_autograd;  // no graph recording: plain inference

    pp_open_output(argv[3]);
    run_module(argv[1], "log_prob", in.poses, poses_shape, {"log_prob"});
    run_module(argv[1], "sample", in.z, z_shape, {"poses"});
    run_module(argv[1], "latent_forward", in.z, z_shape, {"poses", "log_prob"});
    pp_close_output();
    std::free(in.poses);
    std::free(in.z);
  } catch (const c10::Error &e) {  // load errors, shape mismatches inside the module
    pp_die("%s", e.what_without_backtrace());
  } catch (const std::exception &e) {
    pp_die("%s", e.what());
  }
  return 0;
}
