// Static sizes: arithmetic keeps what is static static.
#include <type_traits>

#include "meshplan/core/size.hpp"

namespace mp = meshplan;
using mp::C;
using mp::index_t;

static_assert(mp::is_static_v<C<3>>);
static_assert(!mp::is_static_v<index_t>);
static_assert(mp::Size<C<3>> && mp::Size<int> && mp::Size<index_t> && mp::Size<const C<1>&>);
static_assert(!mp::Size<double> && !mp::Size<float*>);
static_assert(std::is_empty_v<C<42>>);

static_assert(std::is_same_v<decltype(C<6>{} + C<2>{}), C<8>>);
static_assert(std::is_same_v<decltype(C<6>{} - C<2>{}), C<4>>);
static_assert(std::is_same_v<decltype(C<6>{} * C<2>{}), C<12>>);
static_assert(std::is_same_v<decltype(C<6>{} / C<2>{}), C<3>>);
static_assert(std::is_same_v<decltype(C<7>{} % C<4>{}), C<3>>);
static_assert(std::is_same_v<decltype(C<6>{} * index_t{2}), index_t>);
static_assert(C<6>{} * index_t{2} == 12);

static_assert(std::is_same_v<decltype(mp::ceil_div(C<10>{}, C<4>{})), C<3>>);
static_assert(std::is_same_v<decltype(mp::ceil_div(C<10>{}, index_t{4})), index_t>);
static_assert(mp::ceil_div(index_t{10}, index_t{4}) == 3);
static_assert(mp::ceil_div(C<0>{}, C<4>{}) == 0);
static_assert(std::is_same_v<decltype(mp::min(C<3>{}, C<5>{})), C<3>>);
static_assert(std::is_same_v<decltype(mp::max(C<3>{}, C<5>{})), C<5>>);
static_assert(mp::min(index_t{3}, C<2>{}) == 2);

static_assert(std::is_same_v<decltype(mp::make_size<8>(0)), C<8>>);
static_assert(mp::make_size<mp::dynamic>(5) == 5);

// Dividing static sizes by zero is not an expression at all.
template <class A, class B>
concept divisible = requires(A a, B b) { a / b; };
static_assert(divisible<C<4>, C<2>>);
static_assert(!divisible<C<4>, C<0>>);
static_assert(divisible<C<4>, int>);  // dynamic zero: a run-time matter
