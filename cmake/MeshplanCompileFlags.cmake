# Writes the compiler flags a user's target gets from meshplan::core into files that
# compile_check.cmake and the compile-time benchmark pass to the compiler directly:
#   ${MESHPLAN_GCC_FLAGS_FILE}   include directories (Boost, nlohmann/json too) + warnings
#   ${MESHPLAN_NVCC_FLAGS_FILE}  the same for nvcc, plus the CUDA toolkit and the arch
include_guard(GLOBAL)

set(MESHPLAN_WARNINGS -Wall -Wextra -Wpedantic -Wshadow -Werror)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  # g++ 12 at -O2/-O3 reports out-of-bounds and overlapping accesses on paths it invents
  # (GCC PR 105329 for std::string, and std::array reads attributed to another template
  # instantiation). The debug preset's AddressSanitizer checks real accesses instead.
  list(APPEND MESHPLAN_WARNINGS -Wno-array-bounds -Wno-restrict)
endif()

# A probe target's include directories are exactly those a user's target would get.
add_library(meshplan_flags_probe OBJECT EXCLUDE_FROM_ALL "${CMAKE_CURRENT_LIST_DIR}/compile_probe.cpp")
target_link_libraries(meshplan_flags_probe PRIVATE meshplan::core)
set(_probe_includes "$<REMOVE_DUPLICATES:$<TARGET_PROPERTY:meshplan_flags_probe,INCLUDE_DIRECTORIES>>")

set(MESHPLAN_GCC_FLAGS_FILE "${PROJECT_BINARY_DIR}/meshplan-gcc-flags.txt")
file(GENERATE OUTPUT "${MESHPLAN_GCC_FLAGS_FILE}"
  CONTENT "-I$<JOIN:${_probe_includes},\n-I>\n$<JOIN:${MESHPLAN_WARNINGS},\n>\n")

if(MESHPLAN_HAS_CUDA)
  # nvcc: the same directories plus the CUDA toolkit's (for CCCL); host warnings through
  # -Xcompiler; nvcc's own front-end warnings are errors too.
  set(MESHPLAN_NVCC_FLAGS_FILE "${PROJECT_BINARY_DIR}/meshplan-nvcc-flags.txt")
  file(GENERATE OUTPUT "${MESHPLAN_NVCC_FLAGS_FILE}"
    CONTENT "-I$<JOIN:${_probe_includes};${CUDAToolkit_INCLUDE_DIRS},\n-I>\n-arch=sm_${CMAKE_CUDA_ARCHITECTURES}\n-Xcompiler=-Wall,-Wextra,-Werror\n-Werror=all-warnings\n")
endif()
