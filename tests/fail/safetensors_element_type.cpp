// Rule safetensors_element_type: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[safetensors_element_type\]: a Tensor<double> cannot be written: safetensors files here hold float, bfloat16, int32 and int64
#include "meshplan/io/safetensors_writer.hpp"

namespace mp = meshplan;

void write_one(mp::SafetensorsWriter& out) {
#ifdef MESHPLAN_FAIL
  out.add("w", mp::Tensor<double>({2, 2}));
#else
  out.add("w", mp::Tensor<float>({2, 2}));
#endif
}
