// The registered rules (core/rules.hpp), docs/rules.md and tests/fail agree: the docs list
// every registered rule once, with its summary and where it is checked, and nothing else;
// every rule checked at compile time has a compile-fail test that expects its message.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/rules.hpp"

namespace mp = meshplan;
namespace fs = std::filesystem;

namespace {

const fs::path source_dir = fs::path(MESHPLAN_TEST_DATA).parent_path().parent_path();

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  REQUIRE(in.good());
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

struct DocumentedRule {
  std::string summary;
  std::string checked;
  int rows = 0;
};

std::string trim(std::string s) {
  const auto first = s.find_first_not_of(' ');
  const auto last = s.find_last_not_of(' ');
  return first == std::string::npos ? std::string{} : s.substr(first, last - first + 1);
}

/// Every table row of docs/rules.md that names a rule: "| `id` | summary | checked |".
std::map<std::string, DocumentedRule> documented_rules() {
  std::map<std::string, DocumentedRule> rules;
  std::istringstream lines(read_text(source_dir / "docs" / "rules.md"));
  const std::regex row(R"(^\| `([a-z0-9_]+)` \|(.*)\|(.*)\|\s*$)");
  for (std::string line; std::getline(lines, line);) {
    std::smatch m;
    if (!std::regex_match(line, m, row)) continue;
    DocumentedRule& r = rules[m[1].str()];
    r.summary = trim(m[2].str());
    r.checked = trim(m[3].str());
    ++r.rows;
  }
  return rules;
}

std::string_view checked_text(mp::Checked c) {
  switch (c) {
    case mp::Checked::compile: return "compile";
    case mp::Checked::run: return "run";
    case mp::Checked::compile_and_run: return "compile, run";
  }
  return "?";
}

/// The rule ids that tests/fail expects ("expect-error: meshplan \[id\]").
std::set<std::string> ids_with_fail_tests() {
  std::set<std::string> ids;
  const std::regex expect(R"(expect-error: meshplan \\\[([a-z0-9_]+)\\\])");
  for (const auto& entry : fs::directory_iterator(source_dir / "tests" / "fail")) {
    if (entry.path().extension() != ".cpp") continue;
    const std::string text = read_text(entry.path());
    for (std::sregex_iterator it(text.begin(), text.end(), expect), end; it != end; ++it) ids.insert((*it)[1].str());
  }
  return ids;
}

}  // namespace

TEST_CASE("docs/rules.md lists every registered rule once, with its summary and where it is checked",
          "[rules]") {
  const auto docs = documented_rules();
  REQUIRE(docs.size() > 50);  // the parser found the tables
  for (const mp::RuleInfo& rule : mp::rule_registry) {
    INFO("rule " << rule.id);
    const auto it = docs.find(std::string(rule.id));
    REQUIRE(it != docs.end());
    CHECK(it->second.rows == 1);
    CHECK(it->second.summary == rule.summary);
    CHECK(it->second.checked == checked_text(rule.checked));
  }
  for (const auto& [id, doc] : docs) {
    INFO("docs/rules.md row " << id);
    CHECK(mp::find_rule(id) != nullptr);
  }
}

TEST_CASE("every rule checked at compile time has a compile-fail test, and every fail test names a rule",
          "[rules]") {
  const auto tested = ids_with_fail_tests();
  REQUIRE(!tested.empty());
  for (const mp::RuleInfo& rule : mp::rule_registry) {
    if (rule.checked == mp::Checked::run) continue;
    INFO("compile-time rule " << rule.id << " has no test in tests/fail");
    CHECK(tested.count(std::string(rule.id)) == 1);
  }
  for (const std::string& id : tested) {
    INFO("tests/fail expects the unregistered rule " << id);
    CHECK(mp::find_rule(id) != nullptr);
  }
}

TEST_CASE("a message carries its registered id", "[rules]") {
  const mp::Message m = mp::Message::rule("axis_known") << "no axis 'xp'";
  CHECK(m.view() == "meshplan [axis_known]: no axis 'xp'");
  CHECK(m.rule_id() == "axis_known");
  CHECK(mp::find_rule(m.rule_id())->checked == mp::Checked::compile_and_run);
  CHECK(mp::find_rule("not_a_rule") == nullptr);
}
