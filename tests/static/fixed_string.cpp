// fixed_string: names as template arguments.
#include <string_view>

#include "meshplan/core/fixed_string.hpp"
#define MESHPLAN_INTERNAL_HEADERS  // type_name is internal; this test checks it
#include "meshplan/core/detail/type_name.hpp"

namespace mp = meshplan;

template <mp::fixed_string S>
struct named {
  static constexpr std::string_view name = S.view();
};

static_assert(named<"ep">::name == "ep");
static_assert(mp::fixed_string("abc").size() == 3);
static_assert(mp::fixed_string("abc") == mp::fixed_string("abc"));
static_assert(!(mp::fixed_string("abc") == mp::fixed_string("abd")));
static_assert(!(mp::fixed_string("ab") == mp::fixed_string("abc")));
static_assert(std::is_same_v<named<"tp">, named<"tp">>);
static_assert(!std::is_same_v<named<"tp">, named<"ep">>);

static_assert(mp::type_name<int>() == "int");
static_assert(mp::type_name<named<"ep">>().find("named") != std::string_view::npos);
