#pragma once
// Routing: the experts each token goes to, and with which weights, as every backend's
// router produces it and the combine reads it; and the rules a routing's inputs and
// outputs must follow, one message each for every backend.

#include "meshplan/core/detail/public_begin.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"

namespace meshplan {

/// [tokens, top_k] expert ids and weights, slot order (best first).
struct Routing {
  index_t tokens = 0;
  index_t top_k = 0;
  std::vector<std::int32_t> experts;
  std::vector<float> weights;

  std::int32_t expert(index_t t, index_t slot) const noexcept {
    return experts[static_cast<std::size_t>(t * top_k + slot)];
  }
  float weight(index_t t, index_t slot) const noexcept { return weights[static_cast<std::size_t>(t * top_k + slot)]; }
  friend bool operator==(const Routing&, const Routing&) = default;
};

namespace routing_rules {
inline Message router_logits_finite(index_t token, index_t expert, float value) {
  if (std::isfinite(value)) return {};
  return Message::rule("router_logits_finite") << "the router logit of token " << token << " for expert " << expert
                                               << " is " << (std::isnan(value) ? "NaN" : "infinite")
                                               << "; routing needs finite logits (check the hidden states)";
}

inline Message expert_id_valid(index_t pair, std::int32_t expert, index_t experts) {
  if (expert >= 0 && expert < experts) return {};
  return Message::rule("expert_id_valid") << "routing pair " << pair << " names expert " << expert
                                          << ", outside 0.." << (experts - 1);
}
}  // namespace routing_rules

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
