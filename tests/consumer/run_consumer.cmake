# Installs meshplan from its build tree into a fresh prefix, then configures, builds and
# runs a separate project that finds it with find_package(meshplan).
cmake_minimum_required(VERSION 3.25)

set(prefix "${WORK_DIR}/prefix")
set(build "${WORK_DIR}/build")
file(REMOVE_RECURSE "${prefix}" "${build}")

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT result EQUAL 0)
    string(REPLACE ";" " " shown "${ARGN}")
    message(FATAL_ERROR "failed: ${shown}\n${out}${err}")
  endif()
  message(STATUS "${out}")
endfunction()

run(${CMAKE_COMMAND} --install "${MESHPLAN_BUILD_DIR}" --prefix "${prefix}")
run(${CMAKE_COMMAND} -S "${CONSUMER_SOURCE_DIR}" -B "${build}" -G "${GENERATOR}"
    -DCMAKE_PREFIX_PATH=${prefix} -DWITH_CUDA=${WITH_CUDA}
    -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES})
run(${CMAKE_COMMAND} --build "${build}")
run("${build}/consumer")
run("${build}/consumer_io")
