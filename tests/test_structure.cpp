// The structure the code promises (docs/architecture.md §Layers), checked on the sources:
//   - includes only run downward: engine → model → kernels → base, data → base;
//   - outside kernels/cpu, the CPU ops are reached through their op list, kernels/cpu/ops.h;
//   - the CPU and CUDA op lists declare the same ops, each backend binds every one of them
//     (model/backend.h), and every op is exercised by a CPU test and a GPU test;
//   - every config key is documented in docs/config.md.
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "engine/config.h"
#include "tests/catch.h"

namespace fs = std::filesystem;

namespace {

const std::string kRoot = UNIPOOL_SOURCE_DIR;

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<fs::path> sources_under(const std::string& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::recursive_directory_iterator(kRoot + "/" + dir)) {
    const std::string ext = e.path().extension().string();
    if (ext == ".h" || ext == ".cpp" || ext == ".cu" || ext == ".cuh") out.push_back(e.path());
  }
  return out;
}

// The project includes of a file: the "dir/..." paths of its #include "..." lines.
std::vector<std::string> project_includes(const fs::path& file) {
  static const std::regex include_line(R"re(^\s*#\s*include\s*"([^"]+)")re");
  std::vector<std::string> out;
  std::istringstream in(slurp(file));
  std::string line;
  std::smatch m;
  while (std::getline(in, line))
    if (std::regex_search(line, m, include_line)) out.push_back(m[1]);
  return out;
}

std::string top_folder(const std::string& path) {
  return path.substr(0, path.find('/'));
}

// Which folders each layer may include (itself included).
const std::map<std::string, std::set<std::string>> kAllowed = {
    {"base", {"base"}},
    {"kernels", {"kernels", "base"}},
    {"data", {"data", "base"}},
    {"model", {"model", "kernels", "base"}},
    {"engine", {"engine", "model", "kernels", "data", "base"}},
};

// The ops an op list declares: the names of its free functions (templates included).
std::set<std::string> declared_ops(const std::string& header) {
  static const std::regex decl(R"re(^(?:inline\s+)?(?:void|double)\s+([a-z_0-9]+)\()re");
  std::set<std::string> ops;
  std::istringstream in(slurp(kRoot + "/" + header));
  std::string line;
  std::smatch m;
  while (std::getline(in, line))
    if (std::regex_search(line, m, decl)) ops.insert(m[1]);
  return ops;
}

std::string all_of(const std::string& dir, const std::string& prefix) {
  std::string text;
  for (const auto& e : fs::directory_iterator(kRoot + "/" + dir))
    if (e.path().filename().string().rfind(prefix, 0) == 0) text += slurp(e.path());
  return text;
}

}  // namespace

TEST_CASE("includes run downward: engine, model, kernels, base, and data on base", "[structure]") {
  int files = 0;
  for (const auto& [layer, allowed] : kAllowed) {
    for (const fs::path& f : sources_under(layer)) {
      ++files;
      for (const std::string& inc : project_includes(f)) {
        const std::string folder = top_folder(inc);
        if (!kAllowed.count(folder)) continue;  // a system or third-party header in quotes
        INFO(fs::relative(f, kRoot).string() << " includes " << inc);
        CHECK(allowed.count(folder) == 1);
      }
    }
  }
  CHECK(files > 50);  // the walk found the sources
}

TEST_CASE("the CPU ops are reached through kernels/cpu/ops.h", "[structure]") {
  for (const std::string dir : {"base", "data", "model", "engine", "kernels/cuda", "tests"}) {
    for (const fs::path& f : sources_under(dir)) {
      for (const std::string& inc : project_includes(f)) {
        if (inc.rfind("kernels/cpu/", 0) != 0) continue;
        const bool gemm_test = f.filename() == "test_gemm.cpp" && inc == "kernels/cpu/gemm.h";
        INFO(fs::relative(f, kRoot).string() << " includes " << inc);
        CHECK((inc == "kernels/cpu/ops.h" || gemm_test));
      }
    }
  }
}

TEST_CASE("one op list: both backends declare, bind and test the same ops", "[structure]") {
  const std::set<std::string> cpu = declared_ops("kernels/cpu/ops.h");
  const std::set<std::string> gpu = declared_ops("kernels/cuda/ops.h");
  // Helpers that are not ops of the list (kept out of the comparison on purpose):
  const std::set<std::string> cpu_only = {"rope_tables"};
  const std::set<std::string> gpu_only = {"float_to_bf16_copy", "bf16_to_float_copy"};
  REQUIRE(cpu.size() > 30);
  const std::string backend = slurp(kRoot + "/model/backend.h");
  const std::string cpu_tests = all_of("tests", "test_"), gpu_tests = all_of("tests", "test_cuda");
  for (const std::string& op : cpu) {
    if (cpu_only.count(op)) continue;
    INFO("op " << op);
    CHECK(gpu.count(op) == 1);  // declared by the CUDA op list too
    CHECK(backend.find("auto& " + op + " = cpu::" + op) != std::string::npos);
    CHECK(backend.find("auto& " + op + " = cuda::" + op + ";") != std::string::npos);
    CHECK(cpu_tests.find("cpu::" + op) != std::string::npos);         // a CPU test calls it
    CHECK(gpu_tests.find("cuda::" + op + "(") != std::string::npos);  // a GPU test calls it
  }
  for (const std::string& op : gpu) {
    INFO("cuda op " << op);
    CHECK((cpu.count(op) == 1 || gpu_only.count(op) == 1));
  }
}

TEST_CASE("every config key is documented in docs/config.md", "[structure]") {
  const std::string doc = slurp(kRoot + "/docs/config.md");
  REQUIRE(!doc.empty());
  const std::vector<std::string> keys = unipool::config_keys();
  CHECK(keys.size() >= 45);
  for (const std::string& key : keys) {
    INFO(key);
    CHECK(doc.find("`" + key + "`") != std::string::npos);
  }
}
