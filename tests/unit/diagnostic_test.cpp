// Messages: the text shared by the compile-time and run-time paths.
#include <catch2/catch.hpp>

#include <climits>
#include <string>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/mesh/detail/mesh_rules.hpp"

namespace mp = meshplan;

TEST_CASE("a message formats text and integers", "[diagnostic]") {
  mp::Message m = mp::Message::rule("axis_known");
  m << "values " << 0 << ", " << -17 << ", " << 42L << ", " << LLONG_MIN << ", " << mp::C<8>{};
  CHECK(m.view() ==
        "meshplan [axis_known]: values 0, -17, 42, -9223372036854775808, 8");
  CHECK(m.rule_id() == "axis_known");
  CHECK_FALSE(m.ok());
  CHECK(mp::Message{}.ok());
  CHECK(mp::Message{}.rule_id().empty());
}

TEST_CASE("a message longer than its capacity is cut, never overflowed", "[diagnostic]") {
  mp::Message m;
  std::string long_text(mp::Message::capacity * 2, 'x');
  m << long_text << "end";
  CHECK(m.size() == mp::Message::capacity);
  CHECK(m.view() == std::string(mp::Message::capacity, 'x'));
}

TEST_CASE("enforce throws RuleViolation with the message as what()", "[diagnostic]") {
  auto broken = mp::mesh_rules::axis_size_positive("ep", 0);
  try {
    mp::enforce(broken);
    FAIL("enforce did not throw");
  } catch (const mp::RuleViolation& e) {
    CHECK(std::string(e.what()) == std::string(broken.view()));
    CHECK(e.rule() == "axis_size_positive");
  }
  CHECK_NOTHROW(mp::enforce(mp::mesh_rules::axis_size_positive("ep", 1)));
}

TEST_CASE("first_of picks the first broken rule", "[diagnostic]") {
  auto m = mp::first_of({mp::Message{}, mp::mesh_rules::mesh_has_axes(0), mp::mesh_rules::axis_size_positive("a", 0)});
  CHECK(m.rule_id() == "mesh_has_axes");
  CHECK(mp::first_of({mp::Message{}, mp::Message{}}).ok());
}
