#!/usr/bin/env python3
"""Turns the CUDA sources kernels/cuda/*.cu and *.cuh into host C++ for the CPU emulator.

Usage: gen.py REPO_ROOT OUT_DIR
Writes OUT_DIR/kernels/cuda/<name>.cpp for every <name>.cu and OUT_DIR/kernels/cuda/<name>.cuh
for every .cuh (the build puts OUT_DIR first on the include path, so `#include
"kernels/cuda/common.cuh"` finds the transformed copy). A file is rewritten only when its text
changes, so make rebuilds only what changed. Each output starts with `#line 1 "<the .cu>"` and
keeps the original line numbers, so compiler errors, assertion messages and ASan reports point
at the real source lines.

The transformation (emu_cuda.h is force-included by the compiler):
  kernel<<<grid, block[, smem[, stream]]>>>(args);
      -> ::emu::launch_kernel("name", kernel, dim3(grid), dim3(block), size_t(smem), stream, args);
         ("name" is the string of the CUDA_CHECK_LAUNCH that follows the launch, else the
         kernel's name; a launch not followed by a check of cudaGetLastError is reported as a
         warning)
  __shared__ [__align__(A)] T name[dims];  -> auto& name = ::emu::shared_var<T[dims]>(tag, A, "name");
  extern __shared__ [__align__(A)] T name[]; -> T* name = reinterpret_cast<T*>(::emu::dyn_smem());
  __global__ ... __launch_bounds__(N[, ...]) kernel(...) {  -> the body starts with
      ::emu::check_launch_bounds(N);
  #include <mma.h>        -> #include "wmma_emu.h"
  #include <cub/...>      -> #include "cub_emu.h"
  a function whose body contains inline PTX (asm) -> its emulation from ptx_emu.inc (by name)
<cublasLt.h> stays: emu_cublaslt.cpp implements the calls. Anything the transformation does not
understand stops it with the file and line (extend this script, the emulator and README.md).

What it does NOT handle: launches inside macros, __constant__ or __managed__ memory, raw string
literals and digit separators (1'000) in the kernel files, PTX outside a __device__ wrapper
function. It is a textual rewrite (comments and strings are skipped, the preprocessor is not
run), so code that nvcc rejects may well pass here: compile with nvcc too.
"""
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


class GenError(Exception):
    pass


def line_of(text, pos):
    return text.count('\n', 0, pos) + 1


def match_bracket(text, pos, open_ch, close_ch):
    """pos is at open_ch; returns the index of the matching close_ch (skips strings/comments)."""
    depth = 0
    i = pos
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"' or c == "'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == '\\' else 1
            i = j + 1
            continue
        if text.startswith('//', i):
            i = text.find('\n', i)
            if i < 0:
                break
            continue
        if text.startswith('/*', i):
            i = text.find('*/', i) + 2
            continue
        if c == open_ch:
            depth += 1
        elif c == close_ch:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise GenError('unbalanced %s%s' % (open_ch, close_ch))


def split_top(s):
    """Splits at commas outside (), [], {} and template <>."""
    parts, depth, cur = [], 0, ''
    for ch in s:
        if ch in '([{<':
            depth += 1
        elif ch in ')]}>':
            depth -= 1
        if ch == ',' and depth == 0:
            parts.append(cur.strip())
            cur = ''
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def blank_comments(text):
    """The text with comments and string contents replaced by spaces (same length and lines),
    for searching code only."""
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith('//', i):
            j = text.find('\n', i)
            j = n if j < 0 else j
            for k in range(i, j):
                out[k] = ' '
            i = j
        elif text.startswith('/*', i):
            j = text.find('*/', i) + 2
            for k in range(i, j):
                if out[k] != '\n':
                    out[k] = ' '
            i = j
        elif c == '"' or c == "'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == '\\' else 1
            for k in range(i + 1, j):
                out[k] = ' '
            i = j + 1
        else:
            i += 1
    return ''.join(out)


def replace_spans(text, spans):
    """spans: (start, end, replacement); the replacement keeps the number of lines of the
    replaced text (padded with newlines, or followed by a #line when it is longer)."""
    out, last = [], 0
    for start, end, rep, path in sorted(spans):
        if start < last:
            raise GenError('overlapping rewrites')
        out.append(text[last:start])
        old_lines = text.count('\n', start, end)
        new_lines = rep.count('\n')
        if new_lines <= old_lines:
            out.append(rep + '\n' * (old_lines - new_lines))
        else:
            out.append(rep + '\n#line %d "%s"\n' % (line_of(text, end), path))
        last = end
    out.append(text[last:])
    return ''.join(out)


# ---- inline PTX --------------------------------------------------------------------------------
def load_ptx_emulations():
    text = open(os.path.join(HERE, 'ptx_emu.inc')).read()
    blocks = {}
    parts = re.split(r'^// @emulates (\w+)\s*$', text, flags=re.M)
    for k in range(1, len(parts), 2):
        blocks[parts[k]] = parts[k + 1].strip('\n') + '\n'
    return blocks


def rewrite_ptx(text, code, path, emulations):
    spans = []
    for m in re.finditer(r'\basm\b\s*(?:volatile\s*)?\(', code):
        # the function holding this asm: the nearest __device__ before it, named by the identifier
        # before its parameter list, whose body must contain the asm
        where = '%s:%d' % (path, line_of(text, m.start()))
        dev = code.rfind('__device__', 0, m.start())
        if dev < 0:
            raise GenError('%s: inline PTX outside a __device__ function' % where)
        params_open = code.index('(', dev)
        name = re.search(r'(\w+)\s*$', code[dev:params_open]).group(1)
        params_close = match_bracket(code, params_open, '(', ')')
        body_open = code.index('{', params_close)
        body_close = match_bracket(code, body_open, '{', '}')
        if not body_open < m.start() < body_close:
            raise GenError('%s: could not find the function holding this asm' % where)
        if name not in emulations:
            raise GenError(
                '%s: function %s uses inline PTX; add an emulation "// @emulates %s" to '
                'tools/cuda_emu/ptx_emu.inc (and its device-side part to emu.cpp if needed)'
                % (where, name, name))
        start = dev
        tmpl = re.search(r'template\s*<[^;{}]*>\s*$', code[:dev])
        if tmpl:
            start = tmpl.start()
        span = (start, body_close + 1, '// [cuda_emu] %s: emulated (tools/cuda_emu/ptx_emu.inc)\n'
                % name + emulations[name].rstrip('\n'), path)
        if span not in spans:
            spans.append(span)
    return spans


# ---- launches -------------------------------------------------------------------------------------
def kernel_expr_before(code, pos, path, text):
    """The kernel expression ending just before <<< at pos: name, ns::name or name<args>."""
    i = pos
    while i > 0 and code[i - 1] in ' \t\n':
        i -= 1
    end = i
    if code[i - 1] == '>':  # template arguments
        depth = 0
        j = i - 1
        while j >= 0:
            if code[j] == '>':
                depth += 1
            elif code[j] == '<':
                depth -= 1
                if depth == 0:
                    break
            j -= 1
        i = j
    while i > 0 and (code[i - 1].isalnum() or code[i - 1] in '_:'):
        i -= 1
    expr = text[i:end].strip()
    if not re.match(r'^[A-Za-z_][\w:]*(<.*>)?$', expr, re.S):
        raise GenError('%s:%d: cannot read the kernel of this launch' % (path, line_of(text, pos)))
    return i, expr


def rewrite_launches(text, code, path, warnings):
    spans = []
    for m in re.finditer(r'<<<', code):
        line_start = code.rfind('\n', 0, m.start()) + 1
        if code[max(0, line_start - 2):line_start] == '\\\n' or code[line_start:m.start()].lstrip().startswith('#'):
            raise GenError('%s:%d: a launch inside a macro is not supported by gen.py'
                           % (path, line_of(text, m.start())))
        start, expr = kernel_expr_before(code, m.start(), path, text)
        cfg_end = code.index('>>>', m.end())
        cfg = split_top(text[m.end():cfg_end])
        if not 2 <= len(cfg) <= 4:
            raise GenError('%s:%d: launch configuration %r' % (path, line_of(text, m.start()), cfg))
        grid, block = cfg[0], cfg[1]
        smem = cfg[2] if len(cfg) > 2 else '0'
        stream = cfg[3] if len(cfg) > 3 else '(cudaStream_t)0'
        k = cfg_end + 3
        while code[k] in ' \t\n':
            k += 1
        if code[k] != '(':
            raise GenError('%s:%d: launch without arguments' % (path, line_of(text, m.start())))
        args_close = match_bracket(code, k, '(', ')')
        semi = args_close + 1
        while code[semi] in ' \t\n':
            semi += 1
        if code[semi] != ';':
            raise GenError('%s:%d: a launch must be a statement' % (path, line_of(text, m.start())))
        args = ' '.join(text[k + 1:args_close].split())
        check = re.compile(r'\s*CUDA_CHECK_LAUNCH\(\s*"([^"]*)"\s*\)').match(text, semi + 1)
        other_check = re.compile(r'\s*(?:check_cuda|CUDA_CHECK)\(\s*cudaGetLastError\(\)').match(
            text, semi + 1)
        if check:
            name = check.group(1)
        else:
            name = re.sub(r'<.*', '', expr, flags=re.S)
        if not check and not other_check:
            warnings.append('%s:%d: launch of %s is not followed by CUDA_CHECK_LAUNCH'
                            % (path, line_of(text, m.start()), expr))
        rep = '::emu::launch_kernel("%s", %s, dim3(%s), dim3(%s), size_t(%s), %s%s);' % (
            name.replace('"', '\\"'), ' '.join(expr.split()), grid, block, smem, stream,
            ', ' + args if args else '')
        spans.append((start, semi + 1, rep, path))
    return spans


# ---- shared memory and launch bounds -------------------------------------------------------------
SHARED = re.compile(
    r'(?<![\w])(extern\s+)?__shared__\s+(?:__align__\(\s*(\w+)\s*\)\s+)?([^;=\[\]]+?)\s*\b(\w+)\s*'
    r'((?:\[[^\]]*\]\s*)*);')


def rewrite_shared(text, code, path):
    spans = []
    for m in SHARED.finditer(code):
        ext, align, typ, name, dims = m.groups()
        typ = ' '.join(text[m.start(3):m.end(3)].split())
        dims = ''.join(text[m.start(5):m.end(5)].split())
        if ext:
            if dims != '[]':
                raise GenError('%s:%d: extern __shared__ must be an unsized array'
                               % (path, line_of(text, m.start())))
            rep = ('%s* %s = reinterpret_cast<%s*>(::emu::dyn_smem());' % (typ, name, typ))
            if align:
                rep += ' static_assert(%s <= 128, "dynamic shared memory is 128-byte aligned");' % align
        else:
            rep = ('static char %s_emu_tag; auto& %s = ::emu::shared_var<%s%s>(&%s_emu_tag, '
                   '%s, "%s");' % (name, name, typ, dims, name, align or '1', name))
        spans.append((m.start(), m.end(), rep, path))
    return spans


def rewrite_launch_bounds(text, code, path):
    spans = []
    for m in re.finditer(r'__launch_bounds__\s*\(', code):
        close = match_bracket(code, m.end() - 1, '(', ')')
        bound = split_top(text[m.end():close])[0]
        params_open = code.index('(', close + 1)
        body_open = code.index('{', match_bracket(code, params_open, '(', ')'))
        if code[match_bracket(code, params_open, '(', ')') + 1:body_open].strip():
            raise GenError('%s:%d: unexpected text between a kernel\'s parameters and its body'
                           % (path, line_of(text, m.start())))
        spans.append((body_open, body_open + 1,
                      '{ ::emu::check_launch_bounds(unsigned(%s));' % bound, path))
    return spans


def transform(path, text, emulations, warnings):
    code = blank_comments(text)
    spans = []
    spans += rewrite_ptx(text, code, path, emulations)
    # rewrites inside the replaced PTX functions are dropped (their emulation replaces them)
    ptx = [(s, e) for s, e, _, _ in spans]
    inside = lambda sp: any(s <= sp[0] < e for s, e in ptx)
    for sp in (rewrite_launches(text, code, path, warnings) + rewrite_shared(text, code, path) +
               rewrite_launch_bounds(text, code, path)):
        if not inside(sp):
            spans.append(sp)
    out = replace_spans(text, spans)
    out = re.sub(r'^#include <mma.h>', '#include "wmma_emu.h"', out, flags=re.M)
    out = re.sub(r'^#include <cub/[^>]*>', '#include "cub_emu.h"', out, flags=re.M)
    left = blank_comments(out)
    for word in ('<<<', 'asm(', 'asm volatile', '__shared__', '__constant__', '__device__ __managed__'):
        k = left.find(word)
        if k >= 0:
            raise GenError('%s:%d: `%s` left after the transformation: extend tools/cuda_emu/gen.py'
                           % (path, line_of(out, k), word))
    return '#line 1 "%s"\n' % path + out


def write_if_changed(path, text):
    if os.path.exists(path) and open(path).read() == text:
        return False
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)
    return True


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    root, out = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    src = os.path.join(root, 'kernels', 'cuda')
    dst = os.path.join(out, 'kernels', 'cuda')
    emulations = load_ptx_emulations()
    warnings, changed, wanted = [], [], set()
    try:
        for f in sorted(os.listdir(src)):
            if not (f.endswith('.cu') or f.endswith('.cuh')):
                continue
            path = os.path.join(src, f)
            text = transform(path, open(path).read(), emulations, warnings)
            name = f[:-3] + '.cpp' if f.endswith('.cu') else f
            wanted.add(name)
            if write_if_changed(os.path.join(dst, name), text):
                changed.append(name)
    except GenError as e:
        sys.exit('cuda_emu gen.py: ' + str(e))
    if os.path.isdir(dst):  # a kernel file that was removed from the repository
        for f in os.listdir(dst):
            if (f.endswith('.cpp') or f.endswith('.cuh')) and f not in wanted:
                os.remove(os.path.join(dst, f))
                changed.append('-' + f)
    for w in warnings:
        print('cuda_emu gen.py: warning: ' + w, file=sys.stderr)
    print('cuda_emu gen.py: %d kernel files, %s' % (len(wanted), ('rewrote ' + ' '.join(changed))
                                                    if changed else 'unchanged'))


if __name__ == '__main__':
    main()
