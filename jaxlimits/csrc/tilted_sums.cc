// The tilted sums of jaxlimits.moments in one fused pass on the CPU (an XLA FFI custom call).
//
// For each row r (a prompt), beta b and sample n, with t = a[r,n] + lam[r,b] x[r,n] - c[r,b]:
//   s1[r,k,b] = sum_n exp(t)   w1[r,n] f_k(x, y)   (first-order sums)
//   s2[r,k,b] = sum_n exp(t)^2 w2[r,n] h_k(x, y)   (second-order sums: exp(2 t) is a square, not an exp)
// with the monomials of jaxlimits.moments.monomials: f = 1, x, x^2 (and y, x y, y^2 with scores),
// h = 1, x, x^2 (and y, y^2); `first_is_second` uses h for s1 too (the cross sums of importance
// weights). Each exponential is evaluated once and both families are accumulated in registers, so
// the [rows, samples, betas] cube never reaches memory, and the columns are formed here from the
// [rows, samples] inputs. Missing inputs (use_a, use_w1, use_w2 false) count as 0, 1, 1. With `shift`,
// c[r,b] = max_n (a + lam x) over the samples that count (0 where none does) is computed first
// and returned; otherwise the c given is used and returned. Samples with a <= kSkip (the caller
// maps -inf log-weights to the lowest finite numbers) contribute nothing.
//
// Built by jaxlimits/native.py with the system C++ compiler against jaxlib's FFI headers, with
// -O3 -march=native -fno-math-errno -fno-trapping-math -ffinite-math-only -fno-signed-zeros
// (no reassociation: the exponential's Cody-Waite reduction needs its two steps in order).
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <cstdint>
#include <cstring>
#include <cmath>
#include <mutex>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Explicit SIMD (GCC/Clang vector extensions, 64-byte vectors: AVX-512 registers, pairs on AVX2,
// quads on NEON). Auto-vectorisation left the float64 kernel half scalar.
template <typename T> struct Simd;
template <> struct Simd<float> {
  typedef float V __attribute__((vector_size(64)));
  typedef int32_t I __attribute__((vector_size(64)));
  static constexpr int kLanes = 16;
};
template <> struct Simd<double> {
  typedef double V __attribute__((vector_size(64)));
  typedef int64_t I __attribute__((vector_size(64)));
  static constexpr int kLanes = 8;
};

// exp(t) for t <= 0 (clamped above for safety), 0 below the normal range: range reduction by ln 2
// in two parts (Cephes), then Cephes' polynomial (float) or the Taylor series to x^13 (double: no
// division). Measured against the long-double exp: at most 1.4 ulp (float, [-87, 0.5]) and 1.4 ulp
// (double, [-708, 0.5]); tests/test_native.py checks 2 ulp through the whole kernel.
// The constants of each type: clamp range, round-to-nearest shifter (1.5 * 2^mantissa), ln 2 in
// two parts, exponent bias and mantissa bits; poly(r) ~ exp(r) on |r| <= ln 2 / 2.
template <typename T> struct ExpParams;

template <> struct ExpParams<float> {
  using V = Simd<float>::V;
  static constexpr float kLo = -87.0f, kHi = 88.0f, kLog2e = 1.44269504088896341f, kShifter = 12582912.0f;
  static constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  static constexpr int kBias = 127, kMantissa = 23;
  static constexpr float kSkip = -1e37f;
  static inline V poly(V r) {  // Cephes expf
    V p = V{} + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    return p * r * r + r + 1.0f;
  }
};

template <> struct ExpParams<double> {
  using V = Simd<double>::V;
  static constexpr double kLo = -708.0, kHi = 709.0, kLog2e = 1.4426950408889634074, kShifter = 6755399441055744.0;
  static constexpr double kLn2Hi = 6.93145751953125e-1, kLn2Lo = 1.42860682030941723212e-6;
  static constexpr int kBias = 1023, kMantissa = 52;
  static constexpr double kSkip = -1e307;
  static inline V poly(V x) {  // the Taylor series to x^13 (truncation below 2e-16 relative)
    V p = V{} + 1.0 / 6227020800.0;
    p = p * x + 1.0 / 479001600.0;
    p = p * x + 1.0 / 39916800.0;
    p = p * x + 1.0 / 3628800.0;
    p = p * x + 1.0 / 362880.0;
    p = p * x + 1.0 / 40320.0;
    p = p * x + 1.0 / 5040.0;
    p = p * x + 1.0 / 720.0;
    p = p * x + 1.0 / 120.0;
    p = p * x + 1.0 / 24.0;
    p = p * x + 1.0 / 6.0;
    p = p * x + 0.5;
    return (p * x) * x + x + 1.0;
  }
};

template <typename T> struct Exp {
  using P = ExpParams<T>;
  using V = typename Simd<T>::V;
  using I = typename Simd<T>::I;
  static constexpr T kSkip = P::kSkip;
  static inline V f(V t) {
    const auto under = t < P::kLo;
    t = t < P::kLo ? V{} + P::kLo : t;
    t = t > P::kHi ? V{} + P::kHi : t;
    const V k = (t * P::kLog2e + P::kShifter) - P::kShifter;  // round to nearest
    V r = t - k * P::kLn2Hi;
    r = r - k * P::kLn2Lo;
    const I bits = (__builtin_convertvector(k, I) + P::kBias) << P::kMantissa;
    return under ? V{} : P::poly(r) * (V)bits;  // a cast between vectors of one size reinterprets the bits
  }
};

// Vectors per block of betas (the block's sums stay in registers) and samples per partial sum (the
// partial sums are added to the totals every kBlock samples: rounding grows like kBlock + N / kBlock,
// not N).
constexpr int kVectors = 2;
constexpr int64_t kBlock = 256;

struct Inputs {
  bool use_a, use_w1, use_w2, shift;
};

// Monomials of one sample: kFirst (f) or kSecond (h) of jaxlimits.moments.monomials.
template <typename T, bool Scores, bool Second>
inline void monomials(T x, T y, T* out) {
  out[0] = T(1);
  out[1] = x;
  out[2] = x * x;
  if constexpr (Scores) {
    out[3] = y;
    if constexpr (Second) {
      out[4] = y * y;
    } else {
      out[4] = x * y;
      out[5] = y * y;
    }
  }
}

template <bool Scores, bool Second> constexpr int kCount = Scores ? (Second ? 5 : 6) : 3;

// One row: x, y, a, w1, w2 [N]; lam, c [B]; outputs s1 [K1, B], s2 [K2, B], c_out [B].
template <typename T, bool Scores, bool FirstIsSecond, bool HasSecond>
void row_sums(int64_t n_samples, int64_t n_betas, Inputs in, const T* x, const T* y, const T* a, const T* w1,
              const T* w2, const T* lam, const T* c, T* s1, T* s2, T* c_out) {
  using V = typename Simd<T>::V;
  constexpr int L = Simd<T>::kLanes;
  constexpr int W = kVectors * L;
  constexpr int K1 = kCount<Scores, FirstIsSecond>;
  constexpr int K2 = HasSecond ? kCount<Scores, true> : 0;
  constexpr T kSkip = Exp<T>::kSkip;
  for (int64_t b0 = 0; b0 < n_betas; b0 += W) {
    const int64_t len = n_betas - b0 < W ? n_betas - b0 : W;
    T buf[W];
    for (int w = 0; w < W; ++w) buf[w] = w < len ? lam[b0 + w] : T(0);
    V lv[kVectors], cv[kVectors];
    std::memcpy(lv, buf, sizeof lv);
    if (in.shift) {
      V top[kVectors] = {};
      bool any = false;
      for (int64_t n = 0; n < n_samples; ++n) {
        const T xn = x[n], an = in.use_a ? a[n] : T(0);
        if (an <= kSkip) continue;
        for (int v = 0; v < kVectors; ++v) {
          const V val = lv[v] * xn + an;
          top[v] = any ? (val > top[v] ? val : top[v]) : val;
        }
        any = true;
      }
      for (int v = 0; v < kVectors; ++v) cv[v] = top[v];
    } else {
      for (int w = 0; w < W; ++w) buf[w] = w < len ? c[b0 + w] : T(0);
      std::memcpy(cv, buf, sizeof cv);
    }
    V tot1[K1][kVectors] = {};
    V tot2[K2 > 0 ? K2 : 1][kVectors] = {};
    for (int64_t n0 = 0; n0 < n_samples; n0 += kBlock) {
      const int64_t n1 = n0 + kBlock < n_samples ? n0 + kBlock : n_samples;
      V acc1[K1][kVectors] = {};
      V acc2[K2 > 0 ? K2 : 1][kVectors] = {};
      for (int64_t n = n0; n < n1; ++n) {
        const T xn = x[n], an = in.use_a ? a[n] : T(0);
        if (an <= kSkip) continue;
        const T yn = Scores ? y[n] : xn;
        T g1[K1];
        monomials<T, Scores, FirstIsSecond>(xn, yn, g1);
        if (in.use_w1)
          for (int k = 0; k < K1; ++k) g1[k] *= w1[n];
        V e[kVectors];
        for (int v = 0; v < kVectors; ++v) e[v] = Exp<T>::f(lv[v] * xn + (an - cv[v]));
        for (int k = 0; k < K1; ++k)
          for (int v = 0; v < kVectors; ++v) acc1[k][v] += e[v] * g1[k];
        if constexpr (K2 > 0) {
          T g2[K2];
          monomials<T, Scores, true>(xn, yn, g2);
          if (in.use_w2)
            for (int k = 0; k < K2; ++k) g2[k] *= w2[n];
          for (int v = 0; v < kVectors; ++v) e[v] *= e[v];
          for (int k = 0; k < K2; ++k)
            for (int v = 0; v < kVectors; ++v) acc2[k][v] += e[v] * g2[k];
        }
      }
      for (int k = 0; k < K1; ++k)
        for (int v = 0; v < kVectors; ++v) tot1[k][v] += acc1[k][v];
      for (int k = 0; k < K2; ++k)
        for (int v = 0; v < kVectors; ++v) tot2[k][v] += acc2[k][v];
    }
    for (int k = 0; k < K1; ++k) {
      std::memcpy(buf, tot1[k], sizeof buf);
      for (int64_t w = 0; w < len; ++w) s1[k * n_betas + b0 + w] = buf[w];
    }
    for (int k = 0; k < K2; ++k) {
      std::memcpy(buf, tot2[k], sizeof buf);
      for (int64_t w = 0; w < len; ++w) s2[k * n_betas + b0 + w] = buf[w];
    }
    std::memcpy(buf, cv, sizeof buf);
    for (int64_t w = 0; w < len; ++w) c_out[b0 + w] = buf[w];
  }
}

template <typename T>
using RowFn = void (*)(int64_t, int64_t, Inputs, const T*, const T*, const T*, const T*, const T*, const T*,
                       const T*, T*, T*, T*);

template <typename T>
RowFn<T> pick(bool scores, bool first_is_second, bool has_second) {
  if (scores) {
    if (first_is_second) return has_second ? row_sums<T, true, true, true> : row_sums<T, true, true, false>;
    return has_second ? row_sums<T, true, false, true> : row_sums<T, true, false, false>;
  }
  if (first_is_second) return has_second ? row_sums<T, false, true, true> : row_sums<T, false, true, false>;
  return has_second ? row_sums<T, false, false, true> : row_sums<T, false, false, false>;
}

struct Attrs {
  bool scores, first_is_second, has_second;
  Inputs in;
};

template <typename T>
ffi::Error run(ffi::ThreadPool pool, const Attrs& at, ffi::AnyBuffer x, ffi::AnyBuffer y, ffi::AnyBuffer a,
               ffi::AnyBuffer w1, ffi::AnyBuffer w2, ffi::AnyBuffer lam, ffi::AnyBuffer c,
               ffi::Result<ffi::AnyBuffer> s1, ffi::Result<ffi::AnyBuffer> s2, ffi::Result<ffi::AnyBuffer> c_out) {
  const auto xd = x.dimensions();
  const auto ld = lam.dimensions();
  if (xd.size() < 1 || ld.size() < 1) return ffi::Error::InvalidArgument("jaxlimits_tilted_sums: inputs of rank 0");
  const int64_t n = xd[xd.size() - 1];
  const int64_t b = ld[ld.size() - 1];
  const int64_t rows = n > 0 ? static_cast<int64_t>(x.element_count()) / n : 0;
  const int64_t k1 = at.scores ? (at.first_is_second ? 5 : 6) : 3;
  const int64_t k2 = at.has_second ? (at.scores ? 5 : 3) : 0;
  if (b == 0 || rows == 0) return ffi::Error::Success();
  const auto per_sample = [&](ffi::AnyBuffer& v, bool used) {
    return !used || static_cast<int64_t>(v.element_count()) == rows * n;
  };
  if (static_cast<int64_t>(lam.element_count()) != rows * b || static_cast<int64_t>(c.element_count()) != rows * b ||
      !per_sample(y, at.scores) || !per_sample(a, at.in.use_a) || !per_sample(w1, at.in.use_w1) ||
      !per_sample(w2, at.in.use_w2) || static_cast<int64_t>(s1->element_count()) != rows * k1 * b ||
      static_cast<int64_t>(s2->element_count()) != rows * k2 * b)
    return ffi::Error::InvalidArgument("jaxlimits_tilted_sums: inconsistent shapes");
  const RowFn<T> fn = pick<T>(at.scores, at.first_is_second, at.has_second);
  const T* xp = static_cast<const T*>(x.untyped_data());
  const T* yp = static_cast<const T*>(y.untyped_data());
  const T* ap = static_cast<const T*>(a.untyped_data());
  const T* w1p = static_cast<const T*>(w1.untyped_data());
  const T* w2p = static_cast<const T*>(w2.untyped_data());
  const T* lp = static_cast<const T*>(lam.untyped_data());
  const T* cp = static_cast<const T*>(c.untyped_data());
  T* s1p = static_cast<T*>(s1->untyped_data());
  T* s2p = static_cast<T*>(s2->untyped_data());
  T* cop = static_cast<T*>(c_out->untyped_data());
  const Inputs in = at.in;
  const bool scores = at.scores, ua = at.in.use_a, u1 = at.in.use_w1, u2 = at.in.use_w2;
  auto work = [=](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r)
      fn(n, b, in, xp + r * n, scores ? yp + r * n : nullptr, ua ? ap + r * n : nullptr, u1 ? w1p + r * n : nullptr,
         u2 ? w2p + r * n : nullptr, lp + r * b, cp + r * b, s1p + r * k1 * b, s2p + r * k2 * b, cop + r * b);
  };
  // Rows are claimed in chunks from a shared counter by this thread and by helpers scheduled on
  // XLA's intra-op pool. This thread waits only for helpers that are working: a helper still
  // queued (the pool busy, e.g. with other devices' kernels) finds nothing left and returns, so
  // the wait can never depend on a queued task (no deadlock). The state outlives this call.
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> busy{0};
    std::mutex mu;
    std::condition_variable idle;
  };
  const int64_t chunk = rows < 64 ? 1 : rows / 64;
  auto state = std::make_shared<State>();
  auto drain = [=](State& st) {
    for (int64_t lo = st.next.fetch_add(chunk); lo < rows; lo = st.next.fetch_add(chunk))
      work(lo, lo + chunk < rows ? lo + chunk : rows);
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), rows) - 1;
  for (int64_t t = 0; t < helpers; ++t) {
    pool.Schedule([state, drain] {
      state->busy.fetch_add(1);
      drain(*state);
      std::lock_guard<std::mutex> lock(state->mu);
      if (state->busy.fetch_sub(1) == 1) state->idle.notify_all();
    });
  }
  drain(*state);
  std::unique_lock<std::mutex> lock(state->mu);
  state->idle.wait(lock, [&] { return state->busy.load() == 0; });
  return ffi::Error::Success();
}

ffi::Error dispatch(ffi::ThreadPool pool, bool shift, bool scores, bool first_is_second, bool has_second,
                    bool use_a, bool use_w1, bool use_w2, ffi::AnyBuffer x, ffi::AnyBuffer y, ffi::AnyBuffer a,
                    ffi::AnyBuffer w1, ffi::AnyBuffer w2, ffi::AnyBuffer lam, ffi::AnyBuffer c,
                    ffi::Result<ffi::AnyBuffer> s1, ffi::Result<ffi::AnyBuffer> s2, ffi::Result<ffi::AnyBuffer> c_out) {
  const Attrs at{scores, first_is_second, has_second, Inputs{use_a, use_w1, use_w2, shift}};
  if (x.element_type() == ffi::DataType::F32) return run<float>(pool, at, x, y, a, w1, w2, lam, c, s1, s2, c_out);
  if (x.element_type() == ffi::DataType::F64) return run<double>(pool, at, x, y, a, w1, w2, lam, c, s1, s2, c_out);
  return ffi::Error::InvalidArgument("jaxlimits_tilted_sums: float32 or float64 only");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxlimitsTiltedSums, dispatch,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Attr<bool>("shift")
                                  .Attr<bool>("scores")
                                  .Attr<bool>("first_is_second")
                                  .Attr<bool>("has_second")
                                  .Attr<bool>("use_a")
                                  .Attr<bool>("use_w1")
                                  .Attr<bool>("use_w2")
                                  .Arg<ffi::AnyBuffer>()  // x [..., N]
                                  .Arg<ffi::AnyBuffer>()  // y [..., N] (read with scores)
                                  .Arg<ffi::AnyBuffer>()  // a [..., N] (read with use_a)
                                  .Arg<ffi::AnyBuffer>()  // w1 [..., N] (read with use_w1)
                                  .Arg<ffi::AnyBuffer>()  // w2 [..., N] (read with use_w2)
                                  .Arg<ffi::AnyBuffer>()  // lam [..., B]
                                  .Arg<ffi::AnyBuffer>()  // c [..., B]
                                  .Ret<ffi::AnyBuffer>()  // s1 [..., K1, B]
                                  .Ret<ffi::AnyBuffer>()  // s2 [..., K2, B]
                                  .Ret<ffi::AnyBuffer>());  // c_out [..., B]
