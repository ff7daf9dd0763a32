#pragma once
// meshplan: parallel plans for Mixture-of-Experts transformers, written as C++ types.
// The umbrella header of the portable layer; it compiles with a plain C++20 compiler and
// includes nothing from CUDA, MPI or nlohmann/json. The CUDA layer lives under meshplan/cuda/
// (.cuh, nvcc only); MpiComm in meshplan/comm/mpi_comm.hpp (link meshplan::mpi); files
// (config.json, safetensors, checkpoints) under meshplan/io/ (link meshplan::io, which
// brings nlohmann/json).

#include "meshplan/core/detail/public_begin.hpp"

// Core: sizes, names, tensors, the rules' messages.
#include "meshplan/core/bfloat16.hpp"
#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/dtype.hpp"
#include "meshplan/core/fixed_string.hpp"
#include "meshplan/core/rules.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/core/tensor.hpp"
// Meshes and placements.
#include "meshplan/mesh/axis.hpp"
#include "meshplan/mesh/device_mesh.hpp"
#include "meshplan/mesh/group.hpp"
#include "meshplan/mesh/mesh_spec.hpp"
#include "meshplan/placement/extents.hpp"
#include "meshplan/placement/layout.hpp"
#include "meshplan/placement/layout_spec.hpp"
#include "meshplan/placement/placement.hpp"
#include "meshplan/placement/redistribute.hpp"
#include "meshplan/placement/sharding.hpp"
// Models and plans.
#include "meshplan/model/inventory.hpp"
#include "meshplan/model/model_spec.hpp"
#include "meshplan/model/presets.hpp"
#include "meshplan/model/routing.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/cost_model.hpp"
#include "meshplan/plan/local_shape.hpp"
#include "meshplan/plan/lower.hpp"
#include "meshplan/plan/param_layout.hpp"
#include "meshplan/plan/plan.hpp"
#include "meshplan/plan/plan_rules.hpp"
#include "meshplan/plan/plan_walk.hpp"
#include "meshplan/plan/style.hpp"
#include "meshplan/plan/style_table.hpp"
#include "meshplan/plan/typed_plan.hpp"
#include "meshplan/plan/validate.hpp"
// Communicators.
#include "meshplan/comm/agree.hpp"
#include "meshplan/comm/communicator.hpp"
#include "meshplan/comm/host_capacity.hpp"
#include "meshplan/comm/thread_comm.hpp"
// The MoE block and whole models, on the CPU backend.
#include "meshplan/cpu/isa.hpp"
#include "meshplan/cpu/moe_backend.hpp"
#include "meshplan/cpu/thread_pool.hpp"
#include "meshplan/moe/batch.hpp"
#include "meshplan/moe/moe_backend.hpp"
#include "meshplan/moe/moe_block.hpp"
#include "meshplan/moe/moe_gradients.hpp"
#include "meshplan/moe/moe_weights.hpp"
#include "meshplan/moe/reference.hpp"
#include "meshplan/moe/reference_backward.hpp"
#include "meshplan/moe/token_layout.hpp"
#include "meshplan/nn/causal_lm.hpp"
#include "meshplan/nn/optimizer.hpp"
#include "meshplan/nn/random_source.hpp"

#include "meshplan/core/detail/public_end.hpp"
