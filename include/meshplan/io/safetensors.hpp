#pragma once
// safetensors files, read through mmap and written whole: everything a program that reads
// or writes them needs, in one include. Each part lives in its own header, which
// meshplan's own code includes directly:
//
//   io/safetensors_header.hpp     the format, its header parsed and checked (TensorInfo)
//   io/file_dtype.hpp             the dtypes meshplan reads (F32, BF16, F16, I32, I64)
//   io/detail/file_dtype_conversion.hpp  raw elements converted to float, bfloat16 or integers
//   io/detail/mapped_file.hpp            a file mapped read-only
//   io/safetensors_view.hpp       SafetensorsView: tensors of bytes held elsewhere
//   io/safetensors_file.hpp       SafetensorsFile: a mapped file's tensors
//   io/safetensors_writer.hpp     SafetensorsWriter: one file written whole
//
//   mp::SafetensorsFile f("block.safetensors");            // mmap; the header is checked
//   mp::Tensor<float> w = f.read<float>("gate.weight");    // converted from F32/BF16/F16
//   mp::SafetensorsWriter out;                             // float, bfloat16, int32, int64
//   out.add("hidden_states", y);
//   out.write("out.safetensors");
//
// Kept because this is the header users have included since safetensors support began
// (docs/checkpoints.md names it): it still declares what it always did.

#include "meshplan/core/detail/public_begin.hpp"

#include "meshplan/io/safetensors_file.hpp"
#include "meshplan/io/safetensors_view.hpp"
#include "meshplan/io/safetensors_writer.hpp"

#include "meshplan/core/detail/public_end.hpp"
