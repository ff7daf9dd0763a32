# CTest driver for tests that are compilations (static, fail, header tests).
#
#   cmake -DCOMPILER=<path> -DKIND=gcc|nvcc -DFLAGS_FILE=<file> -DSOURCE=<file>
#         -DMODE=pass|fail|twin [-DLANGUAGE=c++|cu] -P compile_check.cmake
#
# pass: SOURCE must compile.
# fail: SOURCE compiled with -DMESHPLAN_FAIL must fail, with exactly one "error:" line
#       (one readable error, not a cascade; g++ only), and its output must match every
#       regular expression given in SOURCE by a line "// expect-error: <regex>".
# twin: SOURCE compiled without MESHPLAN_FAIL (the bad line switched off) must compile.
cmake_minimum_required(VERSION 3.25)

foreach(var COMPILER KIND FLAGS_FILE SOURCE MODE)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "compile_check.cmake: ${var} is not set")
  endif()
endforeach()

file(STRINGS "${FLAGS_FILE}" flags)
if(KIND STREQUAL "nvcc")
  set(command "${COMPILER}" -std=c++20 -x cu -c "${SOURCE}" -o /dev/null ${flags})
else()
  set(command "${COMPILER}" -std=c++20 -fsyntax-only -x c++ "${SOURCE}" ${flags})
endif()
if(MODE STREQUAL "fail")
  list(APPEND command -DMESHPLAN_FAIL)
endif()

execute_process(COMMAND ${command} RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
set(output "${out}${err}")
# g++ prints a message carried in a template argument with its quotes escaped; match the
# text as the user reads it.
string(REPLACE "\\'" "'" output "${output}")
string(REPLACE "\\\"" "\"" output "${output}")
string(REPLACE ";" " " shown "${command}")

if(MODE STREQUAL "pass" OR MODE STREQUAL "twin")
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "expected to compile, but it failed:\n${shown}\n${output}")
  endif()
  message(STATUS "compiles: ${SOURCE}")
  return()
endif()

if(result EQUAL 0)
  message(FATAL_ERROR "expected a compile error, but it compiled:\n${shown}")
endif()

file(STRINGS "${SOURCE}" expectations REGEX "^// expect-error: ")
if(NOT expectations)
  message(FATAL_ERROR "${SOURCE} has no '// expect-error: <regex>' line")
endif()
foreach(line IN LISTS expectations)
  string(REGEX REPLACE "^// expect-error: " "" regex "${line}")
  if(NOT output MATCHES "${regex}")
    message(FATAL_ERROR "the compile error does not match '${regex}':\n${output}")
  endif()
endforeach()

if(KIND STREQUAL "gcc")
  string(REGEX MATCHALL "(^|\n)[^\n]*error: " errors "${output}")
  list(LENGTH errors error_count)
  if(NOT error_count EQUAL 1)
    message(FATAL_ERROR "expected exactly one error, got ${error_count}:\n${output}")
  endif()
endif()
message(STATUS "fails as expected: ${SOURCE}")
