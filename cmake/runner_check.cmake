# CTest driver: runs meshplan-moe on a golden fixture as a user would, then checks its output
# against transformers' (the fixture's expected.safetensors) and against the runner on one
# rank.
#   -DRUNNER=... -DCOMPARE=... -DFIXTURE=<dir> -DMESH=ep=4 -DPLAN=<name> -DOUT=<file prefix>
#   -DEXACT=ON|OFF   ON: the plan only moves data, so the output equals one rank's bit for bit;
#                    OFF: it splits sums over ranks, within 1e-5 of the largest value
#   [-DREFUSE=<regex>]  the run must instead exit with status 2 and a message matching it
#   [-DBACKEND=cuda]    exit status 77 (no GPU) prints "no CUDA device" for the test to skip
cmake_minimum_required(VERSION 3.25)

function(run_runner mesh plan out result)
  set(args --config ${FIXTURE}/config.json --weights ${FIXTURE}/block.safetensors
           --input ${FIXTURE}/input.safetensors --mesh ${mesh} --plan ${plan} --output ${out})
  if(BACKEND)
    list(APPEND args --backend ${BACKEND})
  endif()
  file(REMOVE ${out})
  execute_process(COMMAND ${RUNNER} ${args} RESULT_VARIABLE r OUTPUT_VARIABLE o ERROR_VARIABLE e)
  set(${result} ${r} PARENT_SCOPE)
  set(runner_output "${o}${e}" PARENT_SCOPE)
endfunction()

function(compare a name_a b name_b rtol)
  execute_process(COMMAND ${COMPARE} ${a} ${name_a} ${b} ${name_b} ${rtol} ${ARGN}
                  RESULT_VARIABLE r OUTPUT_VARIABLE o ERROR_VARIABLE e)
  if(NOT r EQUAL 0)
    message(FATAL_ERROR "${name_a} of ${a} differs from ${name_b} of ${b}:\n${o}${e}")
  endif()
  message(STATUS "${o}")
endfunction()

run_runner(${MESH} ${PLAN} ${OUT}.safetensors r)
if(r EQUAL 77)
  message(STATUS "no CUDA device: skipped")
  return()
endif()
if(REFUSE)
  if(NOT r EQUAL 2 OR NOT runner_output MATCHES "${REFUSE}")
    message(FATAL_ERROR "meshplan-moe should have refused with status 2 and '${REFUSE}', but exited ${r}:\n"
                        "${runner_output}")
  endif()
  message(STATUS "refused as expected: ${runner_output}")
  return()
endif()
if(NOT r EQUAL 0)
  message(FATAL_ERROR "meshplan-moe failed (${r}):\n${runner_output}")
endif()
message(STATUS "${runner_output}")

# The backward against transformers' autograd (the fixture's gradients.safetensors, made by
# tools/golden/make_gradients.py): the input's gradient and every parameter's, within 1e-5
# of each gradient's largest magnitude (sums in other orders).
set(golden_gradients ${FIXTURE}/gradients.safetensors)
if(EXISTS ${golden_gradients} AND (NOT BACKEND OR BACKEND STREQUAL "cpu"))
  execute_process(COMMAND ${RUNNER} --config ${FIXTURE}/config.json --weights ${FIXTURE}/block.safetensors
                          --input ${FIXTURE}/input.safetensors --mesh ${MESH} --plan ${PLAN}
                          --output ${OUT}.train.safetensors --grad-output ${golden_gradients}
                          --gradients ${OUT}.gradients.safetensors
                  RESULT_VARIABLE r OUTPUT_VARIABLE o ERROR_VARIABLE e)
  if(NOT r EQUAL 0)
    message(FATAL_ERROR "meshplan-moe --grad-output failed (${r}):\n${o}${e}")
  endif()
  foreach(name hidden_states gate.weight experts.gate_up_proj experts.down_proj)
    compare(${OUT}.gradients.safetensors ${name} ${golden_gradients} ${name} 1e-5)
  endforeach()
  # The shared experts' where the block has them (transformers keeps empty [0, H] tensors for
  # n_shared_experts = 0, which have no gradient to compare).
  foreach(name shared_experts.gate_proj.weight shared_experts.up_proj.weight shared_experts.down_proj.weight)
    execute_process(COMMAND ${COMPARE} ${OUT}.gradients.safetensors ${name} ${OUT}.gradients.safetensors ${name} 0
                    RESULT_VARIABLE has OUTPUT_QUIET ERROR_QUIET)
    if(has EQUAL 0)
      compare(${OUT}.gradients.safetensors ${name} ${golden_gradients} ${name} 1e-5)
    endif()
  endforeach()
endif()

# Against transformers: the same function within fp32 rounding, the same experts.
set(expected ${FIXTURE}/expected.safetensors)
compare(${OUT}.safetensors hidden_states ${expected} output 1e-5)
compare(${OUT}.safetensors topk_ids ${expected} topk_ids 0 rows-as-sets)

# Against one rank: the same routing in the same slot order; the same output bits where
# the plan only moves data.
run_runner(ep=1 ep ${OUT}.one_rank.safetensors r)
if(NOT r EQUAL 0)
  message(FATAL_ERROR "meshplan-moe on one rank failed (${r}):\n${runner_output}")
endif()
if(EXACT)
  set(rtol 0)
else()
  set(rtol 1e-5)
endif()
compare(${OUT}.safetensors hidden_states ${OUT}.one_rank.safetensors hidden_states ${rtol})
compare(${OUT}.safetensors topk_ids ${OUT}.one_rank.safetensors topk_ids 0)
