#pragma once
// One text per broken rule, for both the compile-time and the run-time path.
//
// Every legality rule in meshplan is a constexpr function that returns a Message: empty
// when the rule holds, otherwise "meshplan [rule_id]: what is wrong, where, and by how
// much". The same function runs in two ways:
//   - with static sizes, inside `rule_check<message>`, whose static_assert fails and whose
//     template argument (printed by the compiler right above the error) is the full text;
//   - with run-time sizes, through `enforce(message)`, which throws RuleViolation with
//     exactly that text.
// C++20 static_assert cannot print a computed string, so the text travels as a template
// argument; g++ prints it as `meshplan::Message{"meshplan [rule_id]: ..."}`.

#include "meshplan/core/detail/public_begin.hpp"

#include <concepts>
#include <cstddef>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

#include "meshplan/core/rules.hpp"

namespace meshplan {

struct Message {
  static constexpr std::size_t capacity = 447;
  // Public and without a separate length so that the type is structural and the compiler
  // prints only the text.
  char text[capacity + 1]{};

  /// A message for a broken rule: "meshplan [rule_id]: ". The id must be registered in
  /// core/rules.hpp (RuleId refuses any other at compile time).
  static constexpr Message rule(RuleId id) noexcept { return rule(id.info()); }
  static constexpr Message rule(const RuleInfo& info) noexcept {
    Message m;
    m << "meshplan [" << info.id << "]: ";
    return m;
  }

  constexpr std::size_t size() const noexcept {
    std::size_t n = 0;
    while (n < capacity && text[n] != '\0') ++n;
    return n;
  }
  constexpr bool ok() const noexcept { return text[0] == '\0'; }
  constexpr std::string_view view() const noexcept { return {text, size()}; }

  /// The id between the brackets of "meshplan [rule_id]: ...", empty if ok.
  constexpr std::string_view rule_id() const noexcept {
    auto v = view();
    auto open = v.find('[');
    auto close = v.find(']');
    if (open == std::string_view::npos || close == std::string_view::npos) return {};
    return v.substr(open + 1, close - open - 1);
  }

  constexpr Message& operator<<(std::string_view s) noexcept {
    std::size_t n = size();
    for (char c : s) {
      if (n == capacity) break;  // Truncation is visible: the text simply stops.
      text[n++] = c;
    }
    return *this;
  }
  constexpr Message& operator<<(const char* s) noexcept { return *this << std::string_view(s); }
  constexpr Message& operator<<(char c) noexcept { return *this << std::string_view(&c, 1); }

  template <std::integral I>
    requires(!std::same_as<I, char> && !std::same_as<I, bool>)
  constexpr Message& operator<<(I value) noexcept {
    char digits[24]{};
    int n = 0;
    bool negative = false;
    if constexpr (std::is_signed_v<I>) negative = value < 0;
    // Work in the negative range so that the most negative value does not overflow.
    long long v = static_cast<long long>(value);
    if (!negative) v = -v;
    do {
      digits[n++] = static_cast<char>('0' - (v % 10));
      v /= 10;
    } while (v != 0);
    if (negative) *this << '-';
    while (n > 0) *this << digits[--n];
    return *this;
  }

  /// A compile-time integer (C<v>, std::integral_constant): its value. Generic so that this
  /// header does not need core/size.hpp, whose static checks use Message.
  template <class Constant>
    requires(std::is_empty_v<Constant> && std::integral<std::remove_cv_t<decltype(Constant::value)>>)
  constexpr Message& operator<<(Constant) noexcept { return *this << Constant::value; }
};

/// The first broken rule of several, or ok.
constexpr Message first_of(std::initializer_list<Message> messages) noexcept {
  for (const Message& m : messages)
    if (!m.ok()) return m;
  return {};
}

/// Thrown when a rule is broken by values known only at run time. what() is the same text
/// the compile-time path shows.
class RuleViolation : public std::invalid_argument {
 public:
  explicit RuleViolation(const Message& message)
      : std::invalid_argument(std::string(message.view())), rule_(message.rule_id()) {}
  /// The rule's id, e.g. "kv_heads_divisible".
  const std::string& rule() const noexcept { return rule_; }

 private:
  std::string rule_;
};

/// Run-time path: throws RuleViolation when the message is not ok.
constexpr void enforce(const Message& message) {
  if (!message.ok()) throw RuleViolation(message);
}

/// Compile-time path. Instantiating rule_check<m> with a broken rule fails with one error;
/// the text is the template argument printed in "In instantiation of ... rule_check<...>".
/// `passed` is true either way, so that the `static_assert(rule_check<m>::passed)` that
/// forces the instantiation never adds a second error.
template <Message M>
struct rule_check {
  static_assert(M.ok(),
                "meshplan: a rule is broken; the Message{\"meshplan [rule]: ...\"} printed "
                "above says which rule, where, and the numbers");
  static constexpr bool passed = true;
};

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
