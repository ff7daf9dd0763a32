# CTest driver for a program's exit status and output.
#   cmake -DEXPECT_EXIT=<code> -DEXPECT_REGEX=<regex> -DCOMMAND=<prog;arg;...> -P run_check.cmake
cmake_minimum_required(VERSION 3.25)
execute_process(COMMAND ${COMMAND} RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
string(REPLACE ";" " " shown "${COMMAND}")
if(NOT result STREQUAL "${EXPECT_EXIT}")
  message(FATAL_ERROR "${shown}\nexited with ${result}, expected ${EXPECT_EXIT}:\n${out}${err}")
endif()
if(NOT "${out}${err}" MATCHES "${EXPECT_REGEX}")
  message(FATAL_ERROR "${shown}\noutput does not match '${EXPECT_REGEX}':\n${out}${err}")
endif()
message(STATUS "ok: ${shown}")
