#pragma once
// meshplan: parallel plans for Mixture-of-Experts transformers, written as C++ types.
// The umbrella header of the portable layer; it compiles with a plain C++20 compiler and
// includes nothing from CUDA. The CUDA layer lives under meshplan/cuda/ (.cuh, nvcc only).

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/fixed_string.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/core/type_name.hpp"
#include "meshplan/mesh/axis.hpp"
#include "meshplan/mesh/device_mesh.hpp"
#include "meshplan/mesh/group.hpp"
#include "meshplan/mesh/indexing.hpp"
#include "meshplan/mesh/mesh_spec.hpp"
#include "meshplan/placement/extents.hpp"
#include "meshplan/placement/layout.hpp"
#include "meshplan/placement/layout_spec.hpp"
#include "meshplan/placement/placement.hpp"
#include "meshplan/placement/redistribute.hpp"
#include "meshplan/placement/sharding.hpp"
