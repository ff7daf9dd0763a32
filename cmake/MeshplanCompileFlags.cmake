# Writes the compiler flags a user's target gets from meshplan::core into files that
# compile_check.cmake and the compile-time benchmark pass to the compiler directly:
#   ${MESHPLAN_GCC_FLAGS_FILE}      include directories (Boost) + warnings
#   ${MESHPLAN_NVCC_FLAGS_FILE}     the same for nvcc, plus the CUDA toolkit and the arch
#   ${MESHPLAN_GCC_IO_FLAGS_FILE}   meshplan::io's: core's plus nlohmann/json
#   ${MESHPLAN_NVCC_IO_FLAGS_FILE}  the same for nvcc
#   ${MESHPLAN_GCC_MPI_FLAGS_FILE}  meshplan::mpi's (and ${MESHPLAN_NVCC_MPI_FLAGS_FILE})
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
# Dependencies' directories are -isystem (one line for the flag, one for the directory:
# nvcc wants them apart), as CMake makes them for imported targets, so that
# warnings stay about meshplan's own headers.
set(_own "${PROJECT_SOURCE_DIR}/include")
# The compiler's own directories (/usr/include) are left out, as CMake leaves them out:
# naming them again would reorder the search and break #include_next.
list(JOIN CMAKE_CXX_IMPLICIT_INCLUDE_DIRECTORIES "|" _implicit)
string(REGEX REPLACE "([+.])" "\\\\\\1" _implicit "${_implicit}")
function(_meshplan_include_flags probe out)
  set(dirs "$<REMOVE_DUPLICATES:$<TARGET_PROPERTY:${probe},INCLUDE_DIRECTORIES>>")
  set(deps "$<FILTER:${dirs},EXCLUDE,^(${_own}|${_implicit})$>")
  set(${out} "-I${_own}$<$<BOOL:${deps}>:\n-isystem\n$<JOIN:${deps},\n-isystem\n>>" PARENT_SCOPE)
endfunction()
_meshplan_include_flags(meshplan_flags_probe _probe_includes)

set(MESHPLAN_GCC_FLAGS_FILE "${PROJECT_BINARY_DIR}/meshplan-gcc-flags.txt")
file(GENERATE OUTPUT "${MESHPLAN_GCC_FLAGS_FILE}"
  CONTENT "${_probe_includes}\n$<JOIN:${MESHPLAN_WARNINGS},\n>\n")

# Headers that read or write files (io/) compile with meshplan::io's directories, the
# others without nlohmann/json's.
add_library(meshplan_io_flags_probe OBJECT EXCLUDE_FROM_ALL "${CMAKE_CURRENT_LIST_DIR}/compile_probe.cpp")
target_link_libraries(meshplan_io_flags_probe PRIVATE meshplan::io)
_meshplan_include_flags(meshplan_io_flags_probe _io_probe_includes)
set(MESHPLAN_GCC_IO_FLAGS_FILE "${PROJECT_BINARY_DIR}/meshplan-gcc-io-flags.txt")
file(GENERATE OUTPUT "${MESHPLAN_GCC_IO_FLAGS_FILE}"
  CONTENT "${_io_probe_includes}\n$<JOIN:${MESHPLAN_WARNINGS},\n>\n")

# Headers that need MPI (comm/mpi_comm.hpp) compile with meshplan::mpi's directories.
if(MESHPLAN_HAS_MPI)
  add_library(meshplan_mpi_flags_probe OBJECT EXCLUDE_FROM_ALL "${CMAKE_CURRENT_LIST_DIR}/compile_probe.cpp")
  target_link_libraries(meshplan_mpi_flags_probe PRIVATE meshplan::mpi)
  _meshplan_include_flags(meshplan_mpi_flags_probe _mpi_probe_includes)
  set(MESHPLAN_GCC_MPI_FLAGS_FILE "${PROJECT_BINARY_DIR}/meshplan-gcc-mpi-flags.txt")
  file(GENERATE OUTPUT "${MESHPLAN_GCC_MPI_FLAGS_FILE}"
    CONTENT "${_mpi_probe_includes}\n$<JOIN:${MESHPLAN_WARNINGS},\n>\n")
endif()

if(MESHPLAN_HAS_CUDA)
  # The compile checks build for the first architecture of the list ("90a" of "90a;80-real").
  list(GET CMAKE_CUDA_ARCHITECTURES 0 _probe_arch)
  string(REGEX REPLACE "-(real|virtual)$" "" _probe_arch "${_probe_arch}")
endif()

if(MESHPLAN_HAS_CUDA)
  # nvcc: the same directories plus the CUDA toolkit's (for CCCL); host warnings through
  # -Xcompiler; nvcc's own front-end warnings are errors too.
  set(MESHPLAN_NVCC_FLAGS_FILE "${PROJECT_BINARY_DIR}/meshplan-nvcc-flags.txt")
  file(GENERATE OUTPUT "${MESHPLAN_NVCC_FLAGS_FILE}"
    CONTENT "${_probe_includes}\n-isystem\n$<JOIN:${CUDAToolkit_INCLUDE_DIRS},\n-isystem\n>\n-arch=sm_${_probe_arch}\n-Xcompiler=-Wall,-Wextra,-Werror\n-Werror=all-warnings\n")
endif()

if(MESHPLAN_HAS_CUDA)
  set(MESHPLAN_NVCC_IO_FLAGS_FILE "${PROJECT_BINARY_DIR}/meshplan-nvcc-io-flags.txt")
  file(GENERATE OUTPUT "${MESHPLAN_NVCC_IO_FLAGS_FILE}"
    CONTENT "${_io_probe_includes}\n-isystem\n$<JOIN:${CUDAToolkit_INCLUDE_DIRS},\n-isystem\n>\n-arch=sm_${_probe_arch}\n-Xcompiler=-Wall,-Wextra,-Werror\n-Werror=all-warnings\n")
endif()

if(MESHPLAN_HAS_CUDA AND MESHPLAN_HAS_MPI)
  set(MESHPLAN_NVCC_MPI_FLAGS_FILE "${PROJECT_BINARY_DIR}/meshplan-nvcc-mpi-flags.txt")
  file(GENERATE OUTPUT "${MESHPLAN_NVCC_MPI_FLAGS_FILE}"
    CONTENT "${_mpi_probe_includes}\n-isystem\n$<JOIN:${CUDAToolkit_INCLUDE_DIRS},\n-isystem\n>\n-arch=sm_${_probe_arch}\n-Xcompiler=-Wall,-Wextra,-Werror\n-Werror=all-warnings\n")
endif()
