// The public API is what docs/api.md lists: every header outside a detail/ folder, and
// nothing else; the umbrella header includes every portable public one; every internal
// header refuses a direct include and every public one opens and closes the way.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

namespace fs = std::filesystem;

namespace {

const fs::path source_dir = fs::path(MESHPLAN_TEST_DATA).parent_path().parent_path();
const fs::path include_dir = source_dir / "include";

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  REQUIRE(in.good());
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

bool is_internal(const std::string& header) { return header.find("/detail/") != std::string::npos; }

/// Every header under include/, as "meshplan/...".
std::set<std::string> headers() {
  std::set<std::string> out;
  for (const auto& entry : fs::recursive_directory_iterator(include_dir / "meshplan")) {
    const auto ext = entry.path().extension();
    if (ext == ".hpp" || ext == ".cuh") out.insert(entry.path().lexically_relative(include_dir).generic_string());
  }
  return out;
}

std::set<std::string> matches(const std::string& text, const std::regex& re) {
  std::set<std::string> out;
  for (std::sregex_iterator it(text.begin(), text.end(), re), end; it != end; ++it) out.insert((*it)[1].str());
  return out;
}

}  // namespace

TEST_CASE("docs/api.md lists exactly the public headers", "[api]") {
  const auto all = headers();
  const auto listed = matches(read_text(source_dir / "docs" / "api.md"), std::regex(R"(\| `(meshplan/[a-z0-9_/]+\.(?:hpp|cuh))` \|)"));
  REQUIRE(listed.size() > 50);
  for (const std::string& h : all) {
    if (is_internal(h)) continue;
    INFO("public header " << h << " is not listed in docs/api.md");
    CHECK(listed.count(h) == 1);
  }
  for (const std::string& h : listed) {
    INFO("docs/api.md lists " << h);
    CHECK(all.count(h) == 1);
    CHECK(!is_internal(h));
  }
}

TEST_CASE("the umbrella header includes every portable public header", "[api]") {
  const auto included =
      matches(read_text(include_dir / "meshplan" / "meshplan.hpp"), std::regex(R"re(#include "(meshplan/[a-z0-9_/]+\.hpp)")re"));
  for (const std::string& h : headers()) {
    const bool portable = !is_internal(h) && h != "meshplan/meshplan.hpp" && h.rfind("meshplan/cuda/", 0) != 0 &&
                          h.rfind("meshplan/io/", 0) != 0 && h != "meshplan/comm/mpi_comm.hpp" &&
                          h.rfind("meshplan/plan/builtin/", 0) != 0;  // through builtin/registry.hpp
    if (!portable) continue;
    INFO("meshplan.hpp does not include " << h);
    CHECK(included.count(h) == 1);
  }
  for (const std::string& h : included) {
    INFO("meshplan.hpp includes " << h);
    CHECK((!is_internal(h) || h == "meshplan/core/detail/public_begin.hpp" ||
           h == "meshplan/core/detail/public_end.hpp"));
  }
}

TEST_CASE("internal headers refuse a direct include; public headers open and close the way", "[api]") {
  const std::string guard = "#include \"meshplan/core/detail/internal_header.hpp\"";
  const std::string begin = "#include \"meshplan/core/detail/public_begin.hpp\"";
  const std::string end = "#include \"meshplan/core/detail/public_end.hpp\"";
  const std::set<std::string> machinery = {"meshplan/core/detail/internal_header.hpp",
                                           "meshplan/core/detail/public_begin.hpp",
                                           "meshplan/core/detail/public_end.hpp"};
  for (const std::string& h : headers()) {
    if (machinery.count(h)) continue;
    const std::string text = read_text(include_dir / h);
    INFO(h);
    if (is_internal(h)) {
      CHECK(text.find(guard) != std::string::npos);
    } else {
      const auto b = text.find(begin);
      const auto e = text.rfind(end);
      REQUIRE(b != std::string::npos);
      REQUIRE(e != std::string::npos);
      CHECK(b < e);
      // Every include of the header's own comes between the two.
      const std::regex include_line(R"re(#include [<"]meshplan/[^>"]+[>"])re");
      for (std::sregex_iterator it(text.begin(), text.end(), include_line), stop; it != stop; ++it) {
        const auto at = static_cast<std::size_t>(it->position());
        CHECK((at >= b && at <= e));
      }
    }
  }
}
