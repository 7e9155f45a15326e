// Test entry point. Catch2 3 brings its own main (Catch2::Catch2WithMain); Catch2 2 needs this one.
#if __has_include(<catch2/catch_all.hpp>)
#include <catch2/catch_all.hpp>
#else
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
#endif
