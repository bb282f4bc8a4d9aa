// oneDNN 2-D convolutions for XLA:CPU through the XLA FFI (mtljax/models/onednn/__init__.py).
//
// Three handlers, one per kernel of a convolution and its two gradients, all in flax's layouts:
//   mtljax_onednn_conv_fwd          x [..., N, H, W, C], w [..., KH, KW, C/G, O] -> y [..., N, OH, OW, O]
//   mtljax_onednn_conv_bwd_data     dy [..., N, OH, OW, O], w                   -> dx [..., N, H, W, C]
//   mtljax_onednn_conv_bwd_weights  x, dy                                       -> dw [..., KH, KW, C/G, O]
// The attribute `params` is [stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right,
// dilation_h, dilation_w, groups]. Leading `...` dimensions are vmap's batch dimensions
// (`vmap_method="expand_dims"`: an unbatched operand has size 1 there); they are looped over
// inside one call, or folded into N when the kernel operand is not batched.
//
// Primitives are cached per problem (shapes + params): creating a primitive descriptor costs
// far more than a small convolution. The kernel operand is handed to oneDNN in its own layout
// (`format_tag::any`, usually blocked) and reordered from/to flax's HWIO on every call (PyTorch
// reorders its OIHW weights on every call too).
//
// Threads: XLA calls a custom call from whichever of its pool threads runs that part of the
// program, and GNU OpenMP gives every thread that opens a parallel region a team of its own: the
// convolutions of one program ran on several teams of OMP_NUM_THREADS threads each, a finished
// team spinning (GOMP_SPINCOUNT) while the next one starts, all beside XLA's pool. Every problem
// therefore runs on ONE thread of this library (`Executor`), the master of one OpenMP team, as
// PyTorch's calling thread is; `MTLJAX_ONEDNN_EXECUTOR=0` runs it on the calling thread instead.
// Counters of the work (`mtljax_onednn_stats`) say how many problems, reorders, cache misses and
// calling threads there were and how long oneDNN took.
#include <oneapi/dnnl/dnnl.hpp>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;

namespace {

enum Kind : int64_t { kFwd = 0, kBwdData = 1, kBwdWeights = 2 };

// Everything that defines one problem: kind, N, C, H, W, O, KH, KW, OH, OW, params[9].
using Key = std::array<int64_t, 19>;
struct KeyHash {
  size_t operator()(const Key& k) const {
    size_t h = 1469598103934665603ull;
    for (int64_t v : k) h = (h ^ static_cast<size_t>(v)) * 1099511628211ull;
    return h;
  }
};

struct Plan {
  dnnl::primitive conv;
  memory::desc src, wei_user, wei, dst, scratch;
  bool reorder_weights = false;
  dnnl::reorder wei_reorder;  // user -> oneDNN (fwd, bwd data) or oneDNN -> user (bwd weights)
  memory::desc reorder_scratch;
};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

std::mutex cache_mu;
std::unordered_map<Key, std::shared_ptr<Plan>, KeyHash> cache;

// ---------------------------------------------------------------------------- counters
// Per kind: FFI calls, problems run (one per vmapped slice that is not folded into N), ns in the
// convolution primitives, ns in the kernel reorders, bytes of kernel reordered; then primitive
// cache misses and hits, calling threads seen, and ns the callers waited for the executor.
enum Stat : int {
  kCalls = 0, kProblems = 3, kConvNs = 6, kReorderNs = 9, kReorderBytes = 12,
  kPlanMisses = 15, kPlanHits = 16, kCallerThreads = 17, kWaitNs = 18, kNumStats = 19,
};
std::atomic<int64_t> stats[kNumStats];
std::atomic<int64_t> stats_generation{1};  // a reset starts a new one: callers are counted anew

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// ---------------------------------------------------------------------------- the executor
// One thread that runs every problem, so that one OpenMP team (its own) serves all of them.
// Callers hand it a job and block until it is done; jobs from concurrent callers run one after
// the other (each uses all the team's threads anyway).
class Executor {
 public:
  void Run(const std::function<void()>& job) {
    std::lock_guard<std::mutex> one_caller(call_mu_);
    std::unique_lock<std::mutex> lock(mu_);
    job_ = &job;
    done_ = false;
    cv_.notify_all();
    cv_.wait(lock, [this] { return done_; });
  }

  static Executor* Get() {
    // A new one after fork(): the parent's thread does not exist in the child (the old object is
    // left as it is: its mutexes may be held by threads that are gone).
    static std::atomic<Executor*> executor{nullptr};
    static std::atomic<pid_t> owner{0};
    static std::mutex mu;
    pid_t pid = getpid();
    Executor* e = executor.load();
    if (e && owner.load() == pid) return e;
    std::lock_guard<std::mutex> lock(mu);
    if (!executor.load() || owner.load() != pid) {
      executor.store(new Executor());
      owner.store(pid);
    }
    return executor.load();
  }

 private:
  Executor() : thread_([this] { Loop(); }) { thread_.detach(); }

  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [this] { return job_ != nullptr; });
      const std::function<void()>* job = job_;
      job_ = nullptr;
      lock.unlock();
      (*job)();  // never throws: Conv catches oneDNN's errors inside the job
      lock.lock();
      done_ = true;
      cv_.notify_all();
    }
  }

  std::mutex call_mu_, mu_;
  std::condition_variable cv_;
  const std::function<void()>* job_ = nullptr;
  bool done_ = false;
  std::thread thread_;
};

// Read on every call (a getenv is cheap beside a convolution), so a benchmark can compare both.
bool UseExecutor() {
  const char* v = std::getenv("MTLJAX_ONEDNN_EXECUTOR");
  return !(v && std::strcmp(v, "0") == 0);
}

void CountCaller() {
  thread_local int64_t seen = 0;
  int64_t generation = stats_generation.load();
  if (seen != generation) {
    seen = generation;
    stats[kCallerThreads]++;
  }
}

// flax's kernel [KH, KW, C/G, O] (O = G * O/G, group-major) as oneDNN's logical weights:
// [O, C, KH, KW] without groups, [G, O/G, C/G, KH, KW] with.
memory::desc UserWeights(int64_t G, int64_t O, int64_t C, int64_t KH, int64_t KW) {
  const int64_t Ig = C / G, Og = O / G;
  if (G == 1) return memory::desc({O, C, KH, KW}, memory::data_type::f32, tag::hwio);
  return memory::desc({G, Og, Ig, KH, KW}, memory::data_type::f32,
                      memory::dims{Og, 1, O, KW * Ig * O, Ig * O});
}

std::shared_ptr<Plan> GetPlan(const Key& k) {
  {
    std::lock_guard<std::mutex> lock(cache_mu);
    auto it = cache.find(k);
    if (it != cache.end()) {
      stats[kPlanHits]++;
      return it->second;
    }
  }
  stats[kPlanMisses]++;
  const int64_t kind = k[0], N = k[1], C = k[2], H = k[3], W = k[4], O = k[5], KH = k[6],
                KW = k[7], OH = k[8], OW = k[9];
  const int64_t* p = &k[10];
  const int64_t G = p[8];
  memory::dims strides = {p[0], p[1]}, pad_l = {p[2], p[4]}, pad_r = {p[3], p[5]},
               dil = {p[6] - 1, p[7] - 1};  // oneDNN counts dilation from 0
  auto f32 = memory::data_type::f32;
  auto plan = std::make_shared<Plan>();
  plan->src = memory::desc({N, C, H, W}, f32, tag::nhwc);
  plan->dst = memory::desc({N, O, OH, OW}, f32, tag::nhwc);
  plan->wei_user = UserWeights(G, O, C, KH, KW);
  memory::desc wei_any = G == 1 ? memory::desc({O, C, KH, KW}, f32, tag::any)
                                : memory::desc({G, O / G, C / G, KH, KW}, f32, tag::any);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto& eng = Engine();
  auto algo = dnnl::algorithm::convolution_direct;
  // The backward primitives need the forward descriptor as a hint.
  dnnl::convolution_forward::primitive_desc fwd(eng, dnnl::prop_kind::forward_training, algo,
                                                plan->src, wei_any, plan->dst, strides, dil,
                                                pad_l, pad_r, attr);
  if (kind == kFwd) {
    plan->conv = dnnl::convolution_forward(fwd);
    plan->wei = fwd.weights_desc();
    plan->scratch = fwd.scratchpad_desc();
  } else if (kind == kBwdData) {
    dnnl::convolution_backward_data::primitive_desc bwd(eng, algo, plan->src, wei_any, plan->dst,
                                                        strides, dil, pad_l, pad_r, fwd, attr);
    plan->conv = dnnl::convolution_backward_data(bwd);
    plan->wei = bwd.weights_desc();
    plan->scratch = bwd.scratchpad_desc();
  } else {
    dnnl::convolution_backward_weights::primitive_desc bwd(
        eng, algo, plan->src, wei_any, plan->dst, strides, dil, pad_l, pad_r, fwd, attr);
    plan->conv = dnnl::convolution_backward_weights(bwd);
    plan->wei = bwd.diff_weights_desc();
    plan->scratch = bwd.scratchpad_desc();
  }
  plan->reorder_weights = plan->wei != plan->wei_user;
  if (plan->reorder_weights) {
    // A scratchpad of the caller's too: a primitive with the library's own may not be run by two
    // threads at once (MTLJAX_ONEDNN_EXECUTOR=0 with concurrent custom calls).
    dnnl::reorder::primitive_desc rpd =
        kind == kBwdWeights
            ? dnnl::reorder::primitive_desc(eng, plan->wei, eng, plan->wei_user, attr)
            : dnnl::reorder::primitive_desc(eng, plan->wei_user, eng, plan->wei, attr);
    plan->wei_reorder = dnnl::reorder(rpd);
    plan->reorder_scratch = rpd.scratchpad_desc();
  }
  std::lock_guard<std::mutex> lock(cache_mu);
  return cache.emplace(k, plan).first->second;
}

// One problem on raw pointers: `a`, `b` are the operands, `out` the result, in the order of the
// handler's signature.
void Run(const Plan& plan, int64_t kind, float* a, float* b, float* out) {
  auto& eng = Engine();
  dnnl::stream stream(eng);
  thread_local std::vector<float> scratch_buf, wei_buf, reorder_buf;
  auto grow = [](std::vector<float>& v, size_t bytes) {
    if (v.size() * sizeof(float) < bytes) v.resize(bytes / sizeof(float) + 16);
    return v.data();
  };
  memory scratch(plan.scratch, eng, grow(scratch_buf, plan.scratch.get_size()));
  float* user_w = kind == kBwdWeights ? out : b;
  memory wei_user(plan.wei_user, eng, user_w);
  memory wei = wei_user;
  int64_t t0 = NowNs(), reorder_ns = 0;
  auto reorder = [&](const memory& from, const memory& to) {
    int64_t r0 = NowNs();
    memory rs(plan.reorder_scratch, eng, grow(reorder_buf, plan.reorder_scratch.get_size()));
    plan.wei_reorder.execute(stream, {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to},
                                      {DNNL_ARG_SCRATCHPAD, rs}});
    stream.wait();
    reorder_ns += NowNs() - r0;
    stats[kReorderBytes + kind] += plan.wei.get_size();
  };
  if (plan.reorder_weights) {
    wei = memory(plan.wei, eng, grow(wei_buf, plan.wei.get_size()));
    if (kind != kBwdWeights) reorder(wei_user, wei);
  }
  if (kind == kFwd) {
    plan.conv.execute(stream, {{DNNL_ARG_SRC, memory(plan.src, eng, a)},
                               {DNNL_ARG_WEIGHTS, wei},
                               {DNNL_ARG_DST, memory(plan.dst, eng, out)},
                               {DNNL_ARG_SCRATCHPAD, scratch}});
  } else if (kind == kBwdData) {
    plan.conv.execute(stream, {{DNNL_ARG_DIFF_DST, memory(plan.dst, eng, a)},
                               {DNNL_ARG_WEIGHTS, wei},
                               {DNNL_ARG_DIFF_SRC, memory(plan.src, eng, out)},
                               {DNNL_ARG_SCRATCHPAD, scratch}});
  } else {
    plan.conv.execute(stream, {{DNNL_ARG_SRC, memory(plan.src, eng, a)},
                               {DNNL_ARG_DIFF_DST, memory(plan.dst, eng, b)},
                               {DNNL_ARG_DIFF_WEIGHTS, wei},
                               {DNNL_ARG_SCRATCHPAD, scratch}});
  }
  stream.wait();
  if (kind == kBwdWeights && plan.reorder_weights) reorder(wei, wei_user);
  stats[kProblems + kind]++;
  stats[kConvNs + kind] += NowNs() - t0 - reorder_ns;
  stats[kReorderNs + kind] += reorder_ns;
}

int64_t Prod(ffi::Span<const int64_t> d, size_t from, size_t to) {
  int64_t n = 1;
  for (size_t i = from; i < to; ++i) n *= d[i];
  return n;
}

// The three handlers share this: `xs` is the image-shaped array among the operands/result
// ([..., N, H, W, C]), `ys` the output-shaped one ([..., N, OH, OW, O]), `ws` the kernel.
ffi::Error Conv(int64_t kind, ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> out,
                ffi::Span<const int64_t> params) {
  if (params.size() != 9) return ffi::Error::InvalidArgument("params must have 9 entries");
  ffi::AnyBuffer::Dimensions da = a.dimensions(), db = b.dimensions(), dout = out->dimensions();
  const size_t rank = dout.size();
  if (rank < 4 || da.size() != rank || db.size() != rank)
    return ffi::Error::InvalidArgument("operands must have the same rank >= 4");
  // Which of a, b, out plays x, w, y.
  ffi::Span<const int64_t> xs = kind == kBwdData ? dout : da;
  ffi::Span<const int64_t> ws = kind == kBwdWeights ? dout : db;
  ffi::Span<const int64_t> ys = kind == kFwd ? dout : (kind == kBwdData ? da : db);
  const size_t lead = rank - 4;
  Key key;
  key[0] = kind;
  key[1] = xs[lead];
  key[2] = xs[lead + 3];
  key[3] = xs[lead + 1];
  key[4] = xs[lead + 2];
  key[5] = ws[lead + 3];
  key[6] = ws[lead];
  key[7] = ws[lead + 1];
  key[8] = ys[lead + 1];
  key[9] = ys[lead + 2];
  for (int i = 0; i < 9; ++i) key[10 + i] = params[i];
  float* pa = static_cast<float*>(a.untyped_data());
  float* pb = static_cast<float*>(b.untyped_data());
  float* po = static_cast<float*>(out->untyped_data());
  const int64_t batch = Prod(dout, 0, lead);
  const int64_t sa = Prod(da, lead, rank), sb = Prod(db, lead, rank), so = Prod(dout, lead, rank);
  CountCaller();
  stats[kCalls + kind]++;
  std::string error;
  std::function<void()> job = [&] {
    try {
      // The kernel unbatched and the image operands batched alike (vmap over inputs only):
      // one convolution with the batch folded into N.
      bool w_shared = Prod(ws, 0, lead) == 1;
      bool x_full = Prod(xs, 0, lead) == batch && Prod(ys, 0, lead) == batch;
      if (batch > 1 && w_shared && x_full && kind != kBwdWeights) {
        key[1] *= batch;
        Run(*GetPlan(key), kind, pa, pb, po);
        return;
      }
      auto plan = GetPlan(key);
      // Row-major walk over the leading dimensions; an operand of size 1 there is broadcast.
      std::vector<int64_t> idx(lead, 0);
      for (int64_t i = 0; i < batch; ++i) {
        int64_t oa = 0, ob = 0, ma = 1, mb = 1;
        for (size_t d = lead; d-- > 0;) {
          if (da[d] != 1) oa += idx[d] * ma;
          if (db[d] != 1) ob += idx[d] * mb;
          ma *= da[d];
          mb *= db[d];
        }
        Run(*plan, kind, pa + oa * sa, pb + ob * sb, po + i * so);
        for (size_t d = lead; d-- > 0;) {
          if (++idx[d] < dout[d]) break;
          idx[d] = 0;
        }
      }
    } catch (const dnnl::error& e) {
      error = std::string("oneDNN: ") + e.what();
    } catch (const std::exception& e) {
      error = std::string("mtljax oneDNN convolution: ") + e.what();
    }
  };
  if (UseExecutor()) {
    int64_t t0 = NowNs();
    Executor::Get()->Run(job);
    stats[kWaitNs] += NowNs() - t0;
  } else {
    job();
  }
  if (!error.empty()) return ffi::Error::Internal(error);
  return ffi::Error::Success();
}

ffi::Error ConvFwd(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> y,
                   ffi::Span<const int64_t> params) {
  return Conv(kFwd, x, w, y, params);
}
ffi::Error ConvBwdData(ffi::AnyBuffer dy, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> dx,
                       ffi::Span<const int64_t> params) {
  return Conv(kBwdData, dy, w, dx, params);
}
ffi::Error ConvBwdWeights(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dw,
                          ffi::Span<const int64_t> params) {
  return Conv(kBwdWeights, x, dy, dw, params);
}

}  // namespace

#define MTLJAX_BIND                           \
  ffi::Ffi::Bind()                            \
      .Arg<ffi::AnyBuffer>()                  \
      .Arg<ffi::AnyBuffer>()                  \
      .Ret<ffi::AnyBuffer>()                  \
      .Attr<ffi::Span<const int64_t>>("params")

XLA_FFI_DEFINE_HANDLER_SYMBOL(mtljax_onednn_conv_fwd, ConvFwd, MTLJAX_BIND);
XLA_FFI_DEFINE_HANDLER_SYMBOL(mtljax_onednn_conv_bwd_data, ConvBwdData, MTLJAX_BIND);
XLA_FFI_DEFINE_HANDLER_SYMBOL(mtljax_onednn_conv_bwd_weights, ConvBwdWeights, MTLJAX_BIND);

// The counters above, in their order (kNumStats of them), into `out`; `reset` zeroes them after.
extern "C" int64_t mtljax_onednn_stats(int64_t* out, int64_t n, int64_t reset) {
  for (int64_t i = 0; i < n && i < kNumStats; ++i) {
    out[i] = reset ? stats[i].exchange(0) : stats[i].load();
  }
  if (reset) stats_generation++;
  return kNumStats;
}

// The oneDNN version the library runs with (the Python side reports it).
extern "C" int64_t mtljax_onednn_version() {
  const dnnl_version_t* v = dnnl_version();
  return v->major * 10000 + v->minor * 100 + v->patch;
}
