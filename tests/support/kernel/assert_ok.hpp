#pragma once

// GoogleTest assertions over trustfence::Result: a failure prints the
// error's operator message instead of "has_value() is false".

#include <gtest/gtest.h>

#include <utility>

#define TF_KT_CONCAT_INNER(a, b) a##b
#define TF_KT_CONCAT(a, b) TF_KT_CONCAT_INNER(a, b)

// Asserts that a Result<T> (or Result<void>) holds a value.
#define TF_ASSERT_OK(expr)                                             \
  do {                                                                 \
    auto&& tf_result_ = (expr);                                        \
    ASSERT_TRUE(tf_result_.has_value()) << tf_result_.error().message; \
  } while (0)

#define TF_EXPECT_OK(expr)                                             \
  do {                                                                 \
    auto&& tf_result_ = (expr);                                        \
    EXPECT_TRUE(tf_result_.has_value()) << tf_result_.error().message; \
  } while (0)

// `TF_ASSERT_OK_AND_ASSIGN(auto fd, listen_loopback(AF_INET));`
#define TF_ASSERT_OK_AND_ASSIGN(lhs, expr) \
  TF_KT_ASSIGN_IMPL(TF_KT_CONCAT(tf_result_, __LINE__), lhs, expr)
#define TF_KT_ASSIGN_IMPL(tmp, lhs, expr)              \
  auto tmp = (expr);                                   \
  ASSERT_TRUE(tmp.has_value()) << tmp.error().message; \
  lhs = std::move(*tmp)
