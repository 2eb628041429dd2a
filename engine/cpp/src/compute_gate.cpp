#include "bit/compute_gate.hpp"

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <random>

#include <nlohmann/json.hpp>

namespace bit {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

fs::path cache_root() {
  if (const char* root = std::getenv("BIT_TRT_CACHE"); root && *root) return root;
  const char* home = std::getenv("HOME");
  if (!home || !*home) {
    const passwd* pw = getpwuid(geteuid());
    home = pw ? pw->pw_dir : nullptr;
  }
  return home && *home ? fs::path(home) / ".cache" / "bit-trt" : fs::path();
}

}  // namespace

fs::path gate_verdict_path(const std::string& artifact_sha256, const std::string& described, const CpuHost& cpu,
                           const Tolerance& tolerance) {
  const fs::path root = cache_root();
  if (root.empty()) return {};
  const json tol = {{"rel_l2", tolerance.rel_l2},
                    {"cosine_min", tolerance.cosine_min},
                    {"max_abs_over_scale", tolerance.max_abs_over_scale},
                    {"top1_decisive", tolerance.top1_decisive}};
  const json key = {artifact_sha256, described, cpu.name, cpu.kernel_flags(), cpu.isa_cap, tol};
  return root / "compute-gate" / (sha256_text(key.dump()).substr(0, 32) + ".json");
}

std::optional<GateVerdict> read_gate_verdict(const fs::path& path) {
  if (path.empty()) return std::nullopt;
  const int fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);  // a link could lend another model's verdict
  if (fd < 0) return std::nullopt;
  struct stat st {};
  std::string text;
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid() && !(st.st_mode & 022) &&
      st.st_size < (1 << 20)) {
    text.resize(static_cast<std::size_t>(st.st_size));
    const ssize_t got = read(fd, text.data(), text.size());
    text.resize(got > 0 ? static_cast<std::size_t>(got) : 0);
  }
  close(fd);
  try {
    const json v = json::parse(text);
    if (!v.at("passed").is_boolean() || !v.at("failures").is_array()) return std::nullopt;
    GateVerdict verdict;
    verdict.passed = v.at("passed").get<bool>();
    verdict.failures = v.at("failures").get<std::vector<std::string>>();
    verdict.rel_l2 = v.value("rel_l2", 0.0);
    verdict.cosine_min = v.value("cosine_min", 0.0);
    verdict.max_abs = v.value("max_abs", 0.0);
    verdict.top1_agreement = v.value("top1_agreement", 0.0);
    verdict.described = v.value("described", std::string());
    verdict.images = v.value("images", std::size_t{0});
    return verdict;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

void keep_gate_verdict(const fs::path& path, const GateVerdict& verdict) {
  if (path.empty()) return;
  const json v = {{"rel_l2", verdict.rel_l2},     {"cosine_min", verdict.cosine_min},
                  {"max_abs", verdict.max_abs},   {"top1_agreement", verdict.top1_agreement},
                  {"passed", verdict.passed},     {"failures", verdict.failures},
                  {"described", verdict.described}, {"images", verdict.images}};
  const std::string text = v.dump(1) + "\n";
  std::error_code ec;
  const fs::path root = path.parent_path().parent_path();
  fs::create_directories(root.parent_path(), ec);
  mkdir(root.c_str(), 0700);  // where missing, 0700 as engine/user_cache.make_root makes it (EEXIST is fine)
  if (mkdir(path.parent_path().c_str(), 0700) != 0 && errno != EEXIST) return;
  std::random_device random;
  const fs::path tmp = path.parent_path() / ("." + path.stem().string() + "." + std::to_string(getpid()) + "-" +
                                             std::to_string(random()) + ".tmp");
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return;
  const bool written = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  const bool closed = close(fd) == 0;
  if (!written || !closed || std::rename(tmp.c_str(), path.c_str()) != 0) fs::remove(tmp, ec);
}

}  // namespace bit
