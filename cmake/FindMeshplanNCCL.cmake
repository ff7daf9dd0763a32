# Finds NCCL (header nccl.h and libnccl) and defines meshplan::nccl_library.
# NCCL ships no CMake package; the CUDA toolkit directories are searched first.
include_guard(GLOBAL)

find_path(MESHPLAN_NCCL_INCLUDE_DIR nccl.h
  HINTS ${CUDAToolkit_INCLUDE_DIRS} ENV NCCL_HOME ENV NCCL_ROOT
  PATH_SUFFIXES include)
find_library(MESHPLAN_NCCL_LIBRARY nccl
  HINTS ${CUDAToolkit_LIBRARY_DIR} ENV NCCL_HOME ENV NCCL_ROOT
  PATH_SUFFIXES lib lib64)

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(MeshplanNCCL
  REQUIRED_VARS MESHPLAN_NCCL_LIBRARY MESHPLAN_NCCL_INCLUDE_DIR)

if(MeshplanNCCL_FOUND AND NOT TARGET meshplan::nccl_library)
  add_library(meshplan::nccl_library UNKNOWN IMPORTED)
  set_target_properties(meshplan::nccl_library PROPERTIES
    IMPORTED_LOCATION "${MESHPLAN_NCCL_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${MESHPLAN_NCCL_INCLUDE_DIR}")
endif()
