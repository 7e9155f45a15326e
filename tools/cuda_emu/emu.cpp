// The kernel-execution half of the CUDA emulator (see emu_cuda.h and README.md): runs a launch
// block after block; the threads of a block are fibers on the calling OS thread that switch only
// at __syncthreads, __syncwarp, warp collectives and warp-synchronous primitives (WMMA, ldmatrix,
// mma.sync). Static and dynamic shared memory are fresh buffers per block poisoned with 0xFF, so
// a read before the block wrote it gives NaN (floats, bf16) or -1 (integers).
//
// What it checks: launch limits (block <= 1024 threads, block.z <= 64, grid.y/z <= 65535, grid.x
// < 2^31, dynamic shared memory > 48 KiB only after cudaFuncSetAttribute, static <= 48 KiB,
// total <= 227 KiB, __launch_bounds__), the launch stream, barriers and collectives (see the
// fail() calls: each message says what the GPU would do), deadlocks, cp.async and ldmatrix
// addresses (alignment, shared/global space).
//
// What it does NOT model: concurrency between blocks (they run one after another), the GPU's
// warp scheduling (EMU_ORDER changes the emulated order: forward, reverse or random:SEED, for
// the threads of a block and the blocks of a grid), independent thread scheduling within a warp
// between collectives, memory consistency (every write is visible at once), registers,
// occupancy, bank conflicts and time.
//
// Environment: EMU_ORDER=forward|reverse|random[:seed] (EMU_REVERSE=1 = reverse), EMU_STACK_KB
// (fiber stack, default 256), EMU_CP_ASYNC=poison|eager (default poison: the destination of a
// cp.async reads as NaN until cp.async.wait_group retires it; eager: copied at once),
// EMU_TRACE=1 (print every launch), EMU_STATS=1 (launch counts and emulation time per kernel at
// exit).
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstdarg>
#include <map>
#include <random>
#include <string>
#include <thread>

#include "emu_cuda.h"

// This file is built without sanitizers (it is the hot loop of the emulator and touches device
// memory only through checked ranges); with EMU_ASAN=1 it still tells AddressSanitizer about
// every stack switch, so the instrumented kernel code running on the fibers is checked.
#if defined(__SANITIZE_ADDRESS__) || (defined(EMU_ASAN) && EMU_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#undef EMU_ASAN
#define EMU_ASAN 1
#else
#undef EMU_ASAN
#define EMU_ASAN 0
#endif

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace emu {

// ---- messages --------------------------------------------------------------------------------------
const char* g_kernel = "(host)";
const char* kernel_name() {
  return g_kernel;
}

void fail(const char* fmt, ...) {
  std::fflush(stdout);
  va_list ap;
  va_start(ap, fmt);
  std::fprintf(stderr, "EMU ERROR: ");
  std::vfprintf(stderr, fmt, ap);
  std::fprintf(stderr, "\n");
  va_end(ap);
  std::fflush(stderr);
  std::abort();
}

void warn_once(const char* key, const char* fmt, ...) {
  static std::map<std::string, bool> seen;
  if (seen[key]) return;
  seen[key] = true;
  std::fflush(stdout);
  va_list ap;
  va_start(ap, fmt);
  std::fprintf(stderr, "EMU WARNING: ");
  std::vfprintf(stderr, fmt, ap);
  std::fprintf(stderr, "\n");
  va_end(ap);
  std::fflush(stderr);
}

namespace {

// ---- settings ----------------------------------------------------------------------------------------
enum class Order { kForward, kReverse, kRandom };
struct Settings {
  Order order = Order::kForward;
  uint64_t seed = 1;
  size_t stack_bytes = 256 * 1024;
  bool eager_cp = false;
  bool trace = false;
  bool stats = false;
  Settings() {
    if (const char* r = getenv("EMU_REVERSE"); r != nullptr && *r != '\0' && *r != '0')
      order = Order::kReverse;
    if (const char* o = getenv("EMU_ORDER"); o != nullptr && *o != '\0') {
      const std::string s(o);
      if (s == "forward") {
        order = Order::kForward;
      } else if (s == "reverse") {
        order = Order::kReverse;
      } else if (s.rfind("random", 0) == 0) {
        order = Order::kRandom;
        if (s.size() > 7 && s[6] == ':') seed = std::stoull(s.substr(7));
      } else {
        fail("EMU_ORDER=%s: use forward, reverse or random[:seed]", o);
      }
    }
    if (const char* k = getenv("EMU_STACK_KB"); k != nullptr && *k != '\0')
      stack_bytes = size_t(std::max(16, atoi(k))) * 1024;
    if (const char* c = getenv("EMU_CP_ASYNC"); c != nullptr && *c != '\0') {
      if (std::string(c) == "eager") {
        eager_cp = true;
      } else if (std::string(c) != "poison") {
        fail("EMU_CP_ASYNC=%s: use poison or eager", c);
      }
    }
    trace = getenv("EMU_TRACE") != nullptr;
    stats = getenv("EMU_STATS") != nullptr;
  }
};
const Settings& settings() {
  static const Settings s;
  return s;
}

// ---- fibers ----------------------------------------------------------------------------------------
struct Copy {
  void* dst;
  const void* src;
  int bytes;
  bool valid;
};

struct Barrier {
  int expected = 0;  // threads that have not exited
  int arrived = 0;
  unsigned gen = 0;  // completed generations
  int exited = 0;
  const void* site = nullptr;  // __syncthreads call site of this generation's first arrival
};

struct Fiber {
  void* sp = nullptr;  // saved stack pointer (x86-64 switch)
#if !defined(__x86_64__)
  ucontext_t ctx;
#endif
  char* stack = nullptr;  // usable stack (above a guard page)
  size_t stack_size = 0;
  ThreadRegs regs{{0, 0, 0}, 0};  // threadIdx and the linear index
  bool done = false;
  const Barrier* waiting = nullptr;  // blocked until waiting->gen != wait_gen
  unsigned wait_gen = 0;
  std::vector<std::vector<Copy>> groups;  // committed cp.async groups, oldest first
  std::vector<Copy> open_group;           // issued, not yet committed
#if EMU_ASAN
  void* fake_stack = nullptr;
#endif
};

Fiber* g_cur = nullptr;
std::vector<Fiber> g_fibers;
void* g_sched_sp = nullptr;
#if !defined(__x86_64__)
ucontext_t g_sched_ctx;
#endif
void (*g_run)(const void*) = nullptr;
const void* g_run_ctx = nullptr;
int g_nthreads = 0;
Barrier g_block_bar;
Barrier g_warp_bar[32];

#if EMU_ASAN
const void* g_main_stack_bottom = nullptr;
size_t g_main_stack_size = 0;
#endif

}  // namespace
}  // namespace emu

// The context switch (x86-64 System V): saves the callee-saved registers on the current stack,
// stores the stack pointer to *save and continues on the stack `next` (saved the same way, or
// prepared by prepare_stack). The SSE and x87 control words are not switched: no code here
// changes the rounding mode, so every fiber shares the process's.
#if defined(__x86_64__)
extern "C" void emu_switch_stack(void** save, void* next);
extern "C" void emu_fiber_trampoline();
asm(R"(
  .text
  .globl emu_switch_stack
  .type emu_switch_stack, @function
emu_switch_stack:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_switch_stack, .-emu_switch_stack

  .globl emu_fiber_trampoline
  .type emu_fiber_trampoline, @function
emu_fiber_trampoline:
  movq %r12, %rdi
  callq *%r13
  ud2
  .size emu_fiber_trampoline, .-emu_fiber_trampoline
)");
#endif

namespace emu {
namespace {

[[noreturn]] void fiber_main(Fiber* f);

// Lays out a fresh stack so that switching to it "returns" into emu_fiber_trampoline with r12 = f
// and r13 = fiber_main.
void prepare_stack(Fiber& f) {
#if defined(__x86_64__)
  // top is 16-byte aligned; the "ret" pops the return address at top - 8, so the trampoline
  // starts with rsp = top and its call enters fiber_main with rsp ≡ 8 (mod 16), as the ABI wants.
  uintptr_t top = (reinterpret_cast<uintptr_t>(f.stack) + f.stack_size) & ~uintptr_t(15);
  uint64_t* s = reinterpret_cast<uint64_t*>(top);
  *--s = reinterpret_cast<uint64_t>(&emu_fiber_trampoline);  // return address
  *--s = 0;                                                   // rbp
  *--s = 0;                                                   // rbx
  *--s = reinterpret_cast<uint64_t>(&f);                      // r12
  *--s = reinterpret_cast<uint64_t>(&fiber_main);             // r13
  *--s = 0;                                                   // r14
  *--s = 0;                                                   // r15
  f.sp = s;
#else
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = f.stack;
  f.ctx.uc_stack.ss_size = f.stack_size;
  f.ctx.uc_link = nullptr;
  const uintptr_t p = reinterpret_cast<uintptr_t>(&f);
  makecontext(&f.ctx, reinterpret_cast<void (*)()>(+[](unsigned lo, unsigned hi) {
                fiber_main(reinterpret_cast<Fiber*>((uintptr_t(hi) << 32) | lo));
              }),
              2, unsigned(p & 0xffffffffu), unsigned(p >> 32));
#endif
}

// scheduler → fiber f; returns when f yields or exits.
void resume(Fiber& f) {
  g_cur = &f;
  g_thread = &f.regs;
#if EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f.stack, f.stack_size);
#endif
#if defined(__x86_64__)
  emu_switch_stack(&g_sched_sp, f.sp);
#else
  swapcontext(&g_sched_ctx, &f.ctx);
#endif
#if EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  g_cur = nullptr;
  g_thread = nullptr;
}

// fiber → scheduler (the fiber continues here when resumed).
void yield_to_scheduler() {
  Fiber* me = g_cur;
#if EMU_ASAN
  __sanitizer_start_switch_fiber(&me->fake_stack, g_main_stack_bottom, g_main_stack_size);
#endif
#if defined(__x86_64__)
  emu_switch_stack(&me->sp, g_sched_sp);
#else
  swapcontext(&me->ctx, &g_sched_ctx);
#endif
#if EMU_ASAN
  __sanitizer_finish_switch_fiber(me->fake_stack, &g_main_stack_bottom, &g_main_stack_size);
#endif
  g_cur = me;
  g_thread = &me->regs;
}

void release_if_complete(Barrier& b) {
  if (b.arrived > 0 && b.arrived >= b.expected) {
    b.arrived = 0;
    b.site = nullptr;
    ++b.gen;
  }
}

[[noreturn]] void fiber_main(Fiber* f) {
#if EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &g_main_stack_bottom, &g_main_stack_size);
#endif
  g_cur = f;
  g_thread = &f->regs;
  g_run(g_run_ctx);
  f = g_cur;
  if (!f->groups.empty() || !f->open_group.empty())
    fail("%s: thread %d of block (%u,%u,%u) exits with cp.async copies it never waited for",
         g_kernel, f->regs.linear, g_block_idx.x, g_block_idx.y, g_block_idx.z);
  f->done = true;
  if (g_warp_bar[f->regs.linear / 32].arrived > 0)
    fail("%s: block (%u,%u,%u): thread %d exits while other lanes of its warp wait in %s "
         "(undefined on the GPU)",
         g_kernel, g_block_idx.x, g_block_idx.y, g_block_idx.z, f->regs.linear,
         static_cast<const char*>(g_warp_bar[f->regs.linear / 32].site));
  // The thread exits: barriers expect one thread fewer (and one that waited only for it opens).
  g_block_bar.expected--;
  g_block_bar.exited++;
  Barrier& wb = g_warp_bar[f->regs.linear / 32];
  wb.expected--;
  wb.exited++;
  release_if_complete(g_block_bar);
  release_if_complete(wb);
#if EMU_ASAN
  __sanitizer_start_switch_fiber(nullptr, g_main_stack_bottom, g_main_stack_size);
#endif
#if defined(__x86_64__)
  void* dead = nullptr;
  emu_switch_stack(&dead, g_sched_sp);
#else
  setcontext(&g_sched_ctx);
#endif
  __builtin_unreachable();
}

void barrier_wait(Barrier& b) {
  const unsigned g = b.gen;
  if (++b.arrived >= b.expected) {  // the last one opens it and runs on
    b.arrived = 0;
    b.site = nullptr;
    ++b.gen;
    return;
  }
  g_cur->waiting = &b;
  g_cur->wait_gen = g;
  yield_to_scheduler();
}

// ---- shared memory of the running block -------------------------------------------------------
struct SmemVar {
  const void* tag;
  void* ptr;
  size_t bytes;
};
unsigned char* g_dyn_smem = nullptr;
size_t g_dyn_bytes = 0;
std::vector<SmemVar> g_static_smem;
size_t g_static_bytes = 0;
constexpr size_t kMaxStaticSmem = 48 * 1024;
constexpr size_t kMaxSmemPerBlock = 227 * 1024;  // sm_90: 227 KiB usable by one block

void* alloc_poisoned(size_t bytes, size_t align) {
  void* p = nullptr;
  if (posix_memalign(&p, std::max<size_t>(align, 16), std::max<size_t>(bytes, 1)) != 0)
    fail("out of host memory for %zu bytes of shared memory", bytes);
  std::memset(p, 0xFF, bytes);
  return p;
}

bool in_shared(const void* p, size_t bytes) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  const auto dyn = reinterpret_cast<uintptr_t>(g_dyn_smem);
  if (g_dyn_smem != nullptr && a >= dyn && a + bytes <= dyn + g_dyn_bytes) return true;
  for (const SmemVar& v : g_static_smem) {
    const auto s = reinterpret_cast<uintptr_t>(v.ptr);
    if (a >= s && a + bytes <= s + v.bytes) return true;
  }
  return false;
}

// ---- statistics ---------------------------------------------------------------------------------
struct KernelStats {
  long launches = 0;
  double seconds = 0;
};
std::map<std::string, KernelStats>& stats() {
  static auto* s = new std::map<std::string, KernelStats>;
  return *s;
}
long g_launches = 0;
void print_stats() {
  std::fprintf(stderr, "EMU: %ld kernel launches\n", g_launches);
  for (const auto& [name, s] : stats())
    std::fprintf(stderr, "  %8ld launches %9.3f s  %s\n", s.launches, s.seconds, name.c_str());
}

std::map<const void*, int>& max_dyn_smem() {
  static auto* m = new std::map<const void*, int>;
  return *m;
}

// The order the scheduler visits n items in (threads of a block, blocks of a grid).
void make_order(std::vector<int>& order, int n, uint64_t salt) {
  order.resize(n);
  for (int i = 0; i < n; ++i) order[i] = i;
  switch (settings().order) {
    case Order::kForward:
      break;
    case Order::kReverse:
      std::reverse(order.begin(), order.end());
      break;
    case Order::kRandom: {
      std::mt19937_64 gen(settings().seed * 0x9E3779B97F4A7C15ull + salt);
      std::shuffle(order.begin(), order.end(), gen);
      break;
    }
  }
}

void alloc_stack(Fiber& f) {
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  const size_t bytes = (settings().stack_bytes + page - 1) / page * page;
  void* m = mmap(nullptr, bytes + page, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) fail("cannot map a %zu-byte fiber stack", bytes);
  mprotect(m, page, PROT_NONE);  // guard page: a stack overflow faults (raise EMU_STACK_KB)
  f.stack = static_cast<char*>(m) + page;
  f.stack_size = bytes;
}

void run_block(int nthreads, const std::vector<int>& order) {
  if (int(g_fibers.size()) < nthreads) g_fibers.resize(nthreads);
  g_nthreads = nthreads;
  g_block_bar = Barrier{};
  g_block_bar.expected = nthreads;
  for (int w = 0; w < 32; ++w) {
    g_warp_bar[w] = Barrier{};
    g_warp_bar[w].expected = std::max(0, std::min(32, nthreads - 32 * w));
  }
  const unsigned bx = g_block_dim.x, by = g_block_dim.y;
  for (int t = 0; t < nthreads; ++t) {
    Fiber& f = g_fibers[t];
    if (f.stack == nullptr) alloc_stack(f);
#if EMU_ASAN
    // The frames below fiber_main returned (and unpoisoned themselves); fiber_main's own frame
    // near the top never returns: clear what it may have left.
    const size_t top = std::min<size_t>(f.stack_size, 16 * 1024);
    __asan_unpoison_memory_region(f.stack + f.stack_size - top, top);
#endif
    f.done = false;
    f.waiting = nullptr;
    f.regs.linear = t;
    f.regs.tid = uint3{unsigned(t) % bx, (unsigned(t) / bx) % by, unsigned(t) / (bx * by)};
    f.groups.clear();
    f.open_group.clear();
    prepare_stack(f);
  }
  int remaining = nthreads;
  while (remaining > 0) {
    bool progressed = false;
    for (int t : order) {
      Fiber& f = g_fibers[t];
      if (f.done) continue;
      if (f.waiting != nullptr && f.waiting->gen == f.wait_gen) continue;
      f.waiting = nullptr;
      resume(f);
      progressed = true;
      if (f.done) --remaining;
    }
    if (!progressed) {
      int at_block = 0, at_warp = 0;
      for (int t = 0; t < nthreads; ++t) {
        const Fiber& f = g_fibers[t];
        if (f.done) continue;
        if (f.waiting == &g_block_bar)
          ++at_block;
        else
          ++at_warp;
      }
      std::string warps;
      for (int w = 0; w * 32 < nthreads; ++w) {
        const Barrier& b = g_warp_bar[w];
        if (b.arrived == 0) continue;
        char buf[160];
        std::snprintf(buf, sizeof buf, "\n  warp %d: %d of %d lanes in %s", w, b.arrived,
                      b.expected, b.site ? static_cast<const char*>(b.site) : "?");
        warps += buf;
      }
      fail("%s: deadlock in block (%u,%u,%u): %d threads wait at __syncthreads (%d of %d "
           "arrived) and %d at warp collectives that can never complete (%d threads exited)%s",
           g_kernel, g_block_idx.x, g_block_idx.y, g_block_idx.z, at_block, g_block_bar.arrived,
           g_block_bar.expected, at_warp, g_block_bar.exited, warps.c_str());
    }
  }
}

std::thread::id g_launch_thread;
bool g_launched = false;

}  // namespace

// ---- built-ins --------------------------------------------------------------------------------------
ThreadRegs* g_thread = nullptr;
uint3 g_block_idx{0, 0, 0};
dim3 g_block_dim, g_grid_dim;

unsigned char* dyn_smem() {
  if (g_cur == nullptr) fail("extern __shared__ memory used outside a kernel");
  return g_dyn_smem;
}

void* static_smem(const void* tag, size_t bytes, size_t align, const char* name) {
  if (g_cur == nullptr) fail("__shared__ %s declared outside a kernel", name);
  for (const SmemVar& v : g_static_smem)
    if (v.tag == tag) return v.ptr;
  g_static_bytes += bytes;
  if (g_static_bytes > kMaxStaticSmem)
    fail("%s: %zu bytes of static __shared__ memory (with %s) exceed the 48 KiB limit", g_kernel,
         g_static_bytes, name);
  if (g_static_bytes + g_dyn_bytes > kMaxSmemPerBlock)
    fail("%s: %zu bytes of static + %zu of dynamic shared memory exceed 227 KiB per block",
         g_kernel, g_static_bytes, g_dyn_bytes);
  void* p = alloc_poisoned(bytes, align);
  g_static_smem.push_back(SmemVar{tag, p, bytes});
  return p;
}

// ---- barriers and collectives -------------------------------------------------------------------
void syncthreads(const char* call_site) {
  if (g_cur == nullptr) fail("__syncthreads outside a kernel");
  if (g_block_bar.exited > 0)
    warn_once(g_kernel,
              "%s: __syncthreads after %d threads of the block exited (the GPU counts only the "
              "threads still running; legal on sm_70+, but check it is intended)",
              g_kernel, g_block_bar.exited);
  if (g_block_bar.arrived == 0) {
    g_block_bar.site = call_site;
  } else if (g_block_bar.site != call_site &&
             std::strcmp(static_cast<const char*>(g_block_bar.site), call_site) != 0) {
    fail("%s: block (%u,%u,%u): threads wait at different __syncthreads() (divergent barrier: "
         "undefined behaviour on the GPU): thread %d at %s, an earlier one at %s",
         g_kernel, g_block_idx.x, g_block_idx.y, g_block_idx.z, g_cur->regs.linear, call_site,
         static_cast<const char*>(g_block_bar.site));
  }
  barrier_wait(g_block_bar);
}

namespace {
void check_warp(unsigned mask, const char* what) {
  if (g_cur == nullptr) fail("%s outside a kernel", what);
  const int w = warp();
  const int lanes = std::min(32, g_nthreads - w * 32);
  if (lanes != 32)
    fail("%s: %s in a partial warp of %d lanes (blockDim %u: the emulator supports full warps)",
         g_kernel, what, lanes, g_nthreads);
  if (mask != 0xffffffffu)
    fail("%s: %s with mask %08x (the emulator supports full masks only)", g_kernel, what, mask);
  if (g_warp_bar[w].exited > 0)
    fail("%s: %s with a full mask after %d lanes of warp %d exited (undefined on the GPU)",
         g_kernel, what, g_warp_bar[w].exited, w);
}

// The lanes of a warp meet in one collective: the first to arrive records its kind (`what`),
// every later one must be in the same kind. Returns the buffer parity of this meeting: a lane
// can be at most one collective ahead of the slowest (the next one needs everybody), so data
// published in two alternating buffers needs a single barrier per collective.
int warp_arrive(int w, const char* what) {
  Barrier& b = g_warp_bar[w];
  if (b.arrived == 0) {
    b.site = what;
  } else if (b.site != what && std::strcmp(static_cast<const char*>(b.site), what) != 0) {
    fail("%s: block (%u,%u,%u) warp %d: lane %d is in %s while an earlier lane is in %s (the "
         "lanes of a warp must meet in the same collective)",
         g_kernel, g_block_idx.x, g_block_idx.y, g_block_idx.z, w, lane(), what, static_cast<const char*>(b.site));
  }
  return int(b.gen & 1);
}

uint64_t g_slot[2][32][32];
}  // namespace

void syncwarp(unsigned mask) {
  check_warp(mask, "__syncwarp");
  const int w = warp();
  warp_arrive(w, "__syncwarp");
  barrier_wait(g_warp_bar[w]);
}

void warp_converge(const char* what) {
  check_warp(0xffffffffu, what);
  const int w = warp();
  warp_arrive(w, what);
  barrier_wait(g_warp_bar[w]);
}

uint64_t warp_exchange(uint64_t v, int src, unsigned mask, const char* what) {
  check_warp(mask, what);
  const int w = warp();
  const int p = warp_arrive(w, what);
  g_slot[p][w][lane()] = v;
  barrier_wait(g_warp_bar[w]);
  return g_slot[p][w][src & 31];
}

void warp_gather(uint64_t v, uint64_t all[32], unsigned mask, const char* what) {
  check_warp(mask, what);
  const int w = warp();
  const int p = warp_arrive(w, what);
  g_slot[p][w][lane()] = v;
  barrier_wait(g_warp_bar[w]);
  std::memcpy(all, g_slot[p][w], sizeof g_slot[p][w]);
}

// ---- launches -----------------------------------------------------------------------------------------
void set_max_dyn_smem(const void* fn, int bytes) {
  max_dyn_smem()[fn] = bytes;
}

void check_launch_bounds(unsigned max_threads) {
  const unsigned threads = g_block_dim.x * g_block_dim.y * g_block_dim.z;
  if (threads > max_threads)
    fail("%s: launched with %u threads per block but compiled with __launch_bounds__(%u): the "
         "launch fails on the GPU (too many resources requested)",
         g_kernel, threads, max_threads);
}

void launch(const char* name, const void* fn, dim3 grid, dim3 block, size_t smem,
            cudaStream_t stream, void (*run)(const void* ctx), const void* ctx) {
  if (g_cur != nullptr) fail("%s: kernel launched from device code (not emulated)", name);
  if (!g_launched) {
    g_launched = true;
    g_launch_thread = std::this_thread::get_id();
  } else if (g_launch_thread != std::this_thread::get_id()) {
    fail("%s: launched from another host thread (the emulator runs all device work on one)", name);
  }
  check_stream(stream, name);
  const unsigned long threads = (unsigned long)block.x * block.y * block.z;
  if (block.x == 0 || block.y == 0 || block.z == 0 || threads > 1024 || block.x > 1024 ||
      block.y > 1024 || block.z > 64)
    fail("%s: invalid block (%u,%u,%u): at most 1024 threads, block.z <= 64", name, block.x,
         block.y, block.z);
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 ||
      grid.z > 65535)
    fail("%s: invalid grid (%u,%u,%u): each dimension >= 1, x < 2^31, y and z <= 65535", name,
         grid.x, grid.y, grid.z);
  if (smem > 48 * 1024) {
    auto it = max_dyn_smem().find(fn);
    if (it == max_dyn_smem().end() || size_t(it->second) < smem)
      fail("%s: %zu bytes of dynamic shared memory need cudaFuncSetAttribute("
           "cudaFuncAttributeMaxDynamicSharedMemorySize) >= that first (set: %d)",
           name, smem, it == max_dyn_smem().end() ? 0 : it->second);
  }
  if (smem > kMaxSmemPerBlock)
    fail("%s: %zu bytes of dynamic shared memory exceed 227 KiB per block", name, smem);
  if (settings().trace)
    std::fprintf(stderr, "EMU: launch %s grid (%u,%u,%u) block (%u,%u,%u) smem %zu\n", name, grid.x,
                 grid.y, grid.z, block.x, block.y, block.z, smem);
  note_stream_work(stream);
  const auto t0 = std::chrono::steady_clock::now();
  ++g_launches;

  g_kernel = name;
  g_run = run;
  g_run_ctx = ctx;
  g_grid_dim = grid;
  g_block_dim = block;
  const uint64_t nblocks = uint64_t(grid.x) * grid.y * grid.z;
  std::vector<int> thread_order;
  make_order(thread_order, int(threads), uint64_t(g_launches));
  // Blocks: forward, reverse or a random order (a permutation of up to 2^20 blocks, else chunks).
  std::vector<int> block_order;
  const bool permute = settings().order != Order::kForward && nblocks <= (uint64_t(1) << 20);
  if (permute) make_order(block_order, int(nblocks), uint64_t(g_launches) * 31 + 7);
  for (uint64_t i = 0; i < nblocks; ++i) {
    uint64_t b = permute ? uint64_t(block_order[i])
                         : (settings().order == Order::kReverse ? nblocks - 1 - i : i);
    g_block_idx = uint3{unsigned(b % grid.x), unsigned(b / grid.x % grid.y),
                  unsigned(b / (uint64_t(grid.x) * grid.y))};
    g_dyn_bytes = smem;
    g_dyn_smem = static_cast<unsigned char*>(alloc_poisoned(smem, 128));
    g_static_bytes = 0;
    run_block(int(threads), thread_order);
    std::free(g_dyn_smem);
    g_dyn_smem = nullptr;
    g_dyn_bytes = 0;
    for (const SmemVar& v : g_static_smem) std::free(v.ptr);
    g_static_smem.clear();
  }
  g_kernel = "(host)";
  g_run = nullptr;

  if (settings().stats) {
    static bool registered = false;
    if (!registered) {
      registered = true;
      std::atexit(print_stats);
    }
    KernelStats& s = stats()[name];
    ++s.launches;
    s.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
}

// ---- cp.async -------------------------------------------------------------------------------------
// poison mode (default): the destination reads as 0xFF (NaN) from the issue until the
// cp.async.wait_group that retires the copy, which then writes the data: a read before the wait
// and a write-after-read hazard (a copy into a buffer other threads still read) both show.
void cp_async(void* dst, const void* src, int bytes, bool valid) {
  if (g_cur == nullptr) fail("cp.async outside a kernel");
  if (reinterpret_cast<uintptr_t>(dst) % bytes != 0 || reinterpret_cast<uintptr_t>(src) % bytes != 0)
    fail("%s: cp.async of %d bytes with a misaligned address (shared %p, global %p)", g_kernel,
         bytes, dst, src);
  if (!in_shared(dst, size_t(bytes)))
    fail("%s: cp.async destination %p is not in the block's shared memory", g_kernel, dst);
  if (valid) check_device_range(src, size_t(bytes), "cp.async source");
  const Copy c{dst, src, bytes, valid};
  if (settings().eager_cp) {
    if (valid)
      std::memcpy(dst, src, size_t(bytes));
    else
      std::memset(dst, 0, size_t(bytes));
  } else {
    std::memset(dst, 0xFF, size_t(bytes));
    g_cur->open_group.push_back(c);
  }
}

void cp_commit() {
  if (g_cur == nullptr) fail("cp.async.commit_group outside a kernel");
  if (settings().eager_cp) return;
  g_cur->groups.push_back(std::move(g_cur->open_group));
  g_cur->open_group.clear();
}

void cp_wait(int n) {
  if (g_cur == nullptr) fail("cp.async.wait_group outside a kernel");
  auto& groups = g_cur->groups;
  while (int(groups.size()) > n) {
    for (const Copy& c : groups.front()) {
      if (c.valid)
        std::memcpy(c.dst, c.src, size_t(c.bytes));
      else
        std::memset(c.dst, 0, size_t(c.bytes));
    }
    groups.erase(groups.begin());
  }
}

// ---- ldmatrix / mma.sync (fragment layouts of the PTX ISA) -----------------------------------------
namespace {
const void* g_row_addr[2][32][32];
struct MmaIn {
  uint32_t a[4], b[2];
  float c[4];
};
MmaIn g_mma[2][32][32];
float g_mma_out[2][32][32][4];

float bf16_half(uint32_t v, int hi) {
  const uint32_t u = (hi ? (v >> 16) : (v & 0xffffu)) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
}  // namespace

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lane l gives the address of row l % 8 of
// matrix l / 8; register i of lane l receives, of matrix i, row l / 4 and columns 2(l % 4), +1
// (trans: column l / 4 of rows 2(l % 4), +1).
void ldmatrix_x4(uint32_t r[4], const void* p, bool trans) {
  check_warp(0xffffffffu, "ldmatrix");
  const int w = warp(), l = lane();
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0)
    fail("%s: ldmatrix row address %p is not 16-byte aligned", g_kernel, p);
  if (!in_shared(p, 16)) fail("%s: ldmatrix row address %p is not in shared memory", g_kernel, p);
  const int par = warp_arrive(w, "ldmatrix");
  g_row_addr[par][w][l] = p;
  barrier_wait(g_warp_bar[w]);
  for (int i = 0; i < 4; ++i) {
    uint16_t e[2];
    for (int j = 0; j < 2; ++j) {
      const int row = trans ? 2 * (l % 4) + j : l / 4;
      const int col = trans ? l / 4 : 2 * (l % 4) + j;
      const uint16_t* rp = static_cast<const uint16_t*>(g_row_addr[par][w][i * 8 + row]);
      std::memcpy(&e[j], rp + col, 2);
    }
    r[i] = uint32_t(e[0]) | (uint32_t(e[1]) << 16);
  }
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32: D[16×8] = A[16×16]·B[16×8] + C, each lane
// holding its fragment (groupID = lane / 4, threadID_in_group = lane % 4). Products of bf16 are
// exact in fp32; the k-sum is fp32 in k order (the tensor core's order and internal precision
// differ: within tolerance, not bitwise).
void mma_m16n8k16_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  check_warp(0xffffffffu, "mma.sync");
  const int w = warp(), l = lane();
  const int par = warp_arrive(w, "mma.sync");
  MmaIn& in = g_mma[par][w][l];
  for (int i = 0; i < 4; ++i) in.a[i] = a[i], in.c[i] = c[i];
  in.b[0] = b0;
  in.b[1] = b1;
  // The lane that completes the meeting computes the whole 16×8 tile once (before opening the
  // barrier), every lane then takes its four outputs: c0, c1 at row gid, columns 2·tig + {0, 1};
  // c2, c3 at row gid + 8.
  if (g_warp_bar[w].arrived + 1 == g_warp_bar[w].expected) {
    // A (row fragments): element (row, k) is in lane 4·(row % 8) + (k % 8) / 2, register
    // row / 8 + 2·(k / 8), half k % 2. B (column fragments): element (k, n) is in lane
    // 4·n + (k % 8) / 2, register k / 8, half k % 2.
    float A[16][16], B[8][16];  // B transposed: [n][k]
    for (int row = 0; row < 16; ++row)
      for (int k = 0; k < 16; ++k)
        A[row][k] = bf16_half(g_mma[par][w][4 * (row % 8) + (k % 8) / 2].a[row / 8 + 2 * (k / 8)],
                              k % 2);
    for (int n = 0; n < 8; ++n)
      for (int k = 0; k < 16; ++k)
        B[n][k] = bf16_half(g_mma[par][w][4 * n + (k % 8) / 2].b[k / 8], k % 2);
    for (int t = 0; t < 32; ++t) {
      const int gid = t / 4, tig = t % 4;
      for (int i = 0; i < 4; ++i) {
        const int row = gid + 8 * (i / 2), col = 2 * tig + (i % 2);
        float s = g_mma[par][w][t].c[i];
        for (int k = 0; k < 16; ++k) s += A[row][k] * B[col][k];  // exact products: = fma
        g_mma_out[par][w][t][i] = s;
      }
    }
  }
  barrier_wait(g_warp_bar[w]);
  for (int i = 0; i < 4; ++i) c[i] = g_mma_out[par][w][l][i];
}

}  // namespace emu
