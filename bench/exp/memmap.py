# Where the resident memory of a running karpetrack is: /proc/PID/smaps grouped by what each mapping is, and the
# runtime's own view (GET /sync's "runtime": the GC heap as of its last collection).
# usage: python3 memmap.py KUBECONFIG BINARY [ENV=VAL ...]   Runs the binary against one `Karpetrack.Bench.dll serve`
# as ready.py does (/metrics every 100 ms for the first minute), samples every 100 ms and prints the breakdown at ready,
# at the highest RSS seen (the first recommender run) and at steady state (after the run and 700 back-to-back scrapes).
# The binary is split by segment (code, read-only data, writable data) and its zero-filled tail (.bss and, for NativeAOT,
# .hydrated: the type data the runtime decompresses at start, anonymous but the binary's). With REFS=1 in the
# environment it clears the pages' referenced bits at ready (/proc/PID/clear_refs, needs root) and adds, per kind, how
# much of the RSS was touched since then: at steady that is what the process still uses, the rest was touched once (start-up)
# or mapped by the kernel's fault-around beside a page that was.
import os, sys, subprocess, time, urllib.request, socket, json, threading
kc, binary = sys.argv[1], sys.argv[2]
env = dict(os.environ)
for kv in sys.argv[3:]:
    k, v = kv.split('=', 1); env[k] = v
    if k.startswith('DOTNET_') and v.lower().startswith('0x'):
        sys.exit(f'{k}={v}: the NativeAOT runtime ignores a DOTNET_ value with a 0x prefix (silently); write the hex digits only')
s = socket.socket(); s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]; s.close()
p = subprocess.Popen([binary, '--kubeconfig', kc, '--metrics-addr', f'127.0.0.1:{port}', '--grpc-addr', '127.0.0.1:0',
                      '--log-level', 'warn', '--list-page-size', '500'], env=env, stdout=subprocess.DEVNULL)
exe = os.path.realpath(binary)

def status():
    d = {}
    for l in open(f'/proc/{p.pid}/status'):
        if l.startswith(('VmRSS', 'VmHWM', 'Threads', 'RssAnon', 'RssFile')):
            k, v = l.split(':'); d[k] = int(v.split()[0]) // 1 if k == 'Threads' else int(v.split()[0]) / 1000
    return d

def smaps():
    """Rss (MB) per kind of mapping."""
    maps = []
    cur = None
    for l in open(f'/proc/{p.pid}/smaps'):
        parts = l.split()
        if '-' in parts[0] and ':' not in parts[0]:
            a, b = (int(x, 16) for x in parts[0].split('-'))
            cur = {'start': a, 'end': b, 'perm': parts[1], 'path': parts[5] if len(parts) >= 6 else '', 'rss': 0, 'ref': 0}
            maps.append(cur)
        elif parts[0] == 'Rss:':
            cur['rss'] = int(parts[1])
        elif parts[0] == 'Referenced:':
            cur['ref'] = int(parts[1])
    # The GC's reserved range: a run of adjacent anonymous mappings over 256 MB (the regions reserve: twice the RAM (50 GB here)
    # without a heap limit; five times the limit with one, e.g. 2 GB under a 512Mi container limit).
    runs, i = [], 0
    while i < len(maps):
        j = i
        while j + 1 < len(maps) and not maps[j + 1]['path'] and not maps[j]['path'] and maps[j + 1]['start'] == maps[j]['end']: j += 1
        runs.append((i, j)); i = j + 1
    gc = set()
    for i, j in runs:
        if not maps[i]['path'] and maps[j]['end'] - maps[i]['start'] > (256 << 20): gc.update(range(i, j + 1))
    g, r = {}, {}
    def add(k, v):
        g[k] = g.get(k, 0) + v / 1000
        r[k] = r.get(k, 0) + m['ref'] / 1000
    isbin = lambda m: m['path'] == exe or m['path'].endswith('/karpetrack')
    for idx, m in enumerate(maps):
        size = m['end'] - m['start']
        if isbin(m):
            kind = {'r-x': 'code', 'r--': 'read-only data', 'rw-': 'writable data'}.get(m['perm'][:3], m['perm'])
            add(f'binary: {kind} (file)', m['rss'])
        elif not m['path'] and idx > 0 and isbin(maps[idx - 1]) and maps[idx - 1]['end'] == m['start'] and m['perm'].startswith('rw'):
            add('binary: .bss, .hydrated (anonymous)', m['rss'])
        elif m['path'] == '[heap]': add('malloc main arena (brk)', m['rss'])
        elif m['path'] == '[stack]': add('main thread stack', m['rss'])
        elif m['path'].startswith('/'): add('other files (libs)', m['rss'])
        elif m['path'].startswith('['): add(m['path'], m['rss'])
        elif idx in gc: add('GC heap (regions reserve)', m['rss'])
        elif m['perm'].startswith('rw') and m['start'] % (64 << 20) == 0 and idx + 1 < len(maps) \
                and maps[idx + 1]['start'] == m['end'] and maps[idx + 1]['perm'].startswith('---') \
                and maps[idx + 1]['end'] - m['start'] == (64 << 20):
            add('malloc arenas (64 MB heaps)', m['rss'])
        elif m['perm'].startswith('rw') and idx > 0 and maps[idx - 1]['end'] == m['start'] and maps[idx - 1]['perm'].startswith('---') \
                and maps[idx - 1]['end'] - maps[idx - 1]['start'] <= 65536 and size in range(64 << 10, 17 << 20):
            add('thread stacks', m['rss'])
        elif m['perm'].startswith('rw'): add('other anonymous (large mallocs, GC bookkeeping)', m['rss'])
        else: add('other', m['rss'])
    return g, r

def runtime():
    try:
        return json.loads(urllib.request.urlopen(f'http://127.0.0.1:{port}/sync', timeout=30).read())['runtime']
    except Exception as e:
        return {'error': str(e)}

def get(path):
    with urllib.request.urlopen(f'http://127.0.0.1:{port}{path}', timeout=30) as r: return r.read()

refs = bool(os.environ.get('REFS'))

def sections():
    """Resident MB of each ELF section of the binary (/proc/PID/pagemap's present bit, needs root; a page shared by two
    sections counts for both). SECTIONS=1 in the environment prints it at ready and at steady."""
    out = subprocess.run(['readelf', '-SW', exe], capture_output=True, text=True).stdout
    secs = []
    for l in out.split('\n'):
        m = __import__('re').match(r'\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)', l)
        if m and int(m.group(2), 16) and int(m.group(3), 16) >= (256 << 10): secs.append((m.group(1), int(m.group(2), 16), int(m.group(3), 16)))
    base = None
    for l in open(f'/proc/{p.pid}/maps'):
        f = l.split()
        if len(f) >= 6 and os.path.realpath(f[5]) == exe and int(f[2], 16) == 0: base = int(f[0].split('-')[0], 16); break
    if base is None: return []
    res = []
    with open(f'/proc/{p.pid}/pagemap', 'rb') as pm:
        for name, addr, size in secs:
            first, last = (base + addr) >> 12, (base + addr + size - 1) >> 12
            pm.seek(first * 8); data = pm.read((last - first + 1) * 8)
            present = sum(1 for i in range(0, len(data), 8) if data[i + 7] & 0x80)
            res.append((name, size / 1e6, present * 4096 / 1e6))
    return res

def show_sections(label):
    if not os.environ.get('SECTIONS'): return
    print(f'   sections of the binary at {label} (MB resident / size): ' + ', '.join(f'{n} {r:.1f}/{s:.1f}' for n, s, r in sections()))
def show(label, st, sm, rt):
    sm, ref = sm
    print(f'== {label}: VmRSS {st["VmRSS"]:.0f} MB (anon {st["RssAnon"]:.0f}, file {st["RssFile"]:.0f}), VmHWM {st["VmHWM"]:.0f}, threads {st["Threads"]}')
    for k, v in sorted(sm.items(), key=lambda kv: -kv[1]):
        if v >= 0.5: print(f'   {k:50} {v:7.1f} MB' + (f'  (touched since ready {ref[k]:6.1f})' if refs and label != 'ready' else ''))
    if 'gc_heap_bytes' in rt:
        gens = ' '.join(f'{n} {b/1e6:.1f}' for n, b in zip(['gen0', 'gen1', 'gen2', 'loh', 'poh'], rt['gc_generation_bytes']))
        print(f'   GC (as of its last collection): heap {rt["gc_heap_bytes"]/1e6:.1f} MB, committed {rt["gc_committed_bytes"]/1e6:.1f}, '
              f'fragmented {rt["gc_fragmented_bytes"]/1e6:.1f}; after: {gens}; collections {rt["gc_collections"]}')
    else: print('   ', rt)
    sys.stdout.flush()

while True:
    try:
        if urllib.request.urlopen(f'http://127.0.0.1:{port}/readyz', timeout=5).status == 200: break
    except Exception: pass
    time.sleep(0.05)
rt = runtime()
show('ready', status(), smaps(), rt)
show_sections('ready')
print('   GC settings in force (/sync):', ', '.join(f'{k}={v:#x}' if isinstance(v, int) and not isinstance(v, bool) and v > 4096 else f'{k}={v}'
      for k, v in sorted(rt.get('gc_settings', {}).items()) if k.startswith(('GCRegion', 'GCHeapHard', 'GCConserve', 'GCGen0', 'GCgen0', 'TotalPhys'))))
if refs:
    with open(f'/proc/{p.pid}/clear_refs', 'w') as f: f.write('1')

peak = {'rss': 0}
stop = False
def sampler():
    while not stop:
        try:
            st = status()
            if st['VmRSS'] > peak['rss'] + 1:
                peak.update(rss=st['VmRSS'], st=st, sm=smaps(), rt=runtime())
        except Exception: pass
        time.sleep(0.1)
th = threading.Thread(target=sampler, daemon=True); th.start()

lat = []
for i in range(610):
    t = time.time(); get('/metrics'); d = time.time() - t
    if i >= 10: lat.append(d)
    if d < 0.1: time.sleep(0.1 - d)
lat.sort()
gcs = {l.rsplit(' ', 1)[0]: float(l.rsplit(' ', 1)[1]) for l in get('/metrics').decode().split('\n')
       if l.startswith(('dotnet_collection_count_total', 'dotnet_gc_pause_seconds_total'))}
print(f'first minute /metrics p50 {lat[len(lat)//2]*1000:.1f} p99 {lat[int(len(lat)*0.99)]*1000:.1f} ms; '
      f'collections gen0/1/2 {[int(v) for k, v in sorted(gcs.items()) if k.startswith("dotnet_collection")]}, '
      f'paused {gcs.get("dotnet_gc_pause_seconds_total", 0):.2f} s [load {open("/proc/loadavg").read().split()[0]}]')
def runs():
    for l in get('/metrics').decode().split('\n'):
        if l.startswith('karpetrack_recommender_duration_seconds_count '): return float(l.split()[1])
    return 0
while runs() < 1: time.sleep(0.5)
time.sleep(5); stop = True; th.join()
show('peak (highest VmRSS sampled)', peak['st'], peak['sm'], peak['rt'])
for i in range(700): get('/metrics')
time.sleep(5)
show('steady (after the run and 700 scrapes)', status(), smaps(), runtime())
show_sections('steady')
if os.environ.get('DROP'):
    # What a product change that gave back the binary's start-up pages would save: MADV_PAGEOUT (process_madvise(2), from
    # here, Linux 5.10+) over the binary's read-only and code mappings, then two more recommender runs and 700 scrapes, then
    # what has come back. A process would do it on itself with madvise(MADV_DONTNEED) once ready.
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    class iovec(ctypes.Structure): _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]
    ranges = []
    for l in open(f'/proc/{p.pid}/maps'):
        f = l.split()
        if len(f) >= 6 and os.path.realpath(f[5]) == exe and f[1] in ('r--p', 'r-xp'):
            a, b = (int(x, 16) for x in f[0].split('-')); ranges.append((a, b - a))
    iov = (iovec * len(ranges))(*[iovec(a, n) for a, n in ranges])
    pidfd = libc.syscall(434, p.pid, 0)
    done = libc.syscall(440, pidfd, iov, len(ranges), 21, 0)
    print(f'   MADV_PAGEOUT over the binary\'s {len(ranges)} read-only mappings: {done / 1e6:.1f} MB advised (errno {ctypes.get_errno()})')
    show('right after', status(), smaps(), runtime())
    n0 = runs()
    while runs() < n0 + 2: get('/metrics'); time.sleep(0.1)
    for i in range(700): get('/metrics')
    time.sleep(5)
    show('steady again (two more runs and 700 scrapes after the page-out)', status(), smaps(), runtime())
    show_sections('steady again')
print(f'[load {open("/proc/loadavg").read().split()[0]}]')
p.terminate(); p.wait()
