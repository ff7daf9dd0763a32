// The Catch2 runner for all unit tests.
#define CATCH_CONFIG_MAIN
#define CATCH_CONFIG_CONSOLE_WIDTH 120
#include <catch2/catch.hpp>
