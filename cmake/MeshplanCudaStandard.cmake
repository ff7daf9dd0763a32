# Teaches CMake older than the CUDA 13 era how to ask nvcc for C++20.
#
# CMake 3.25 knows no C++20 flag for nvcc 13: CUDA_STANDARD 20 then passes no -std at
# all (nvcc silently compiles C++17), and the cuda_std_20 compile feature is rejected.
# nvcc has accepted -std=c++20 since CUDA 12.0, so where CMake does not define the flag
# we define it, together with the compile feature, after the CUDA language is enabled.
# tests/cuda/cxx20_check.cu fails to compile if this ever stops working.
include_guard(GLOBAL)

if(CMAKE_CUDA_COMPILER_ID STREQUAL "NVIDIA"
   AND CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 12.0
   AND NOT DEFINED CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
  set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_COMPILE_FEATURES cuda_std_20)
  list(APPEND CMAKE_CUDA_COMPILE_FEATURES cuda_std_20)
endif()
