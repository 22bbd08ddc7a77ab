"""Reporting: the ratio table (block / reference), memory growth with ``N``, and the files a run writes
(``results.json``, ``results.csv``, ``benchmark.png``)."""
import csv
import json
import math
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from .cases import format_shape


def fmt(value: Optional[float], pattern: str, missing: str = '-') -> str:
    """``pattern.format(value)``, or ``missing`` for None."""
    return missing if value is None else pattern.format(value)


def ratio_table(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One summary per case: the block's figures and its ratios to each reference.

    ``time x dense`` is block time / dense time (below 1: the block is faster); ``mem x dense`` the same
    for extra peak memory; ``time x products`` is block time / its matrix-product floor.
    """
    cases: Dict[Tuple, Dict[str, Dict]] = {}
    for r in rows:
        key = (r['block'], r.get('cfg', '{}'), tuple(r['shape']), r['device'], r['dtype'])
        cases.setdefault(key, {})[r['impl']] = r
    table = []
    for (block, cfg, shape, device, dtype), impls in cases.items():
        own = impls.get('block', {})
        entry = dict(block=block, cfg=cfg, shape=list(shape), positions=math.prod(shape[2:]), device=device,
                     dtype=dtype, path=own.get('path', ''), time_ms=own.get('time_ms'),
                     peak_mib=own.get('peak_mib'), products_ms=own.get('products_ms'),
                     status=own.get('status', 'missing'))
        if own.get('time_ms') and own.get('products_ms'):
            entry['time_x_products'] = own['time_ms'] / own['products_ms']
        for kind in ('dense', 'mmcv'):
            ref = impls.get(kind)
            if ref is None:
                continue
            entry[f'{kind}_status'] = ref['status']
            if ref.get('time_ms') and own.get('time_ms'):
                entry[f'time_x_{kind}'] = own['time_ms'] / ref['time_ms']
                entry[f'{kind}_time_ms'] = ref['time_ms']
            if ref.get('peak_mib') and own.get('peak_mib') is not None:
                entry[f'mem_x_{kind}'] = own['peak_mib'] / ref['peak_mib']
                entry[f'{kind}_peak_mib'] = ref['peak_mib']
            for e in ('err_out', 'err_grad', 'err_branch'):
                if e in ref:
                    entry[f'{kind}_{e}'] = ref[e]
        table.append(entry)
    return table


def format_table(rows: Sequence[Dict[str, Any]]) -> str:
    """The ratio table as aligned text."""
    header = ['case', 'path', 'time ms', 'extra MiB', 'x products', 'dense: time', 'mem', 'err',
              'mmcv: time', 'mem', 'err']
    lines = [header]
    for e in ratio_table(rows):
        cfg = json.loads(e['cfg'])
        name = e['block'] + (f"[{','.join(f'{k}={v}' for k, v in cfg.items())}]" if cfg else '')
        cells = [f"{name} {format_shape(e['shape'])}", e['path'] or '-', fmt(e['time_ms'], '{:.1f}'),
                 fmt(e['peak_mib'], '{:.1f}'), fmt(e.get('time_x_products'), '{:.2f}x')]
        for kind in ('dense', 'mmcv'):
            status = e.get(f'{kind}_status')
            if status is None or status.startswith('skipped') or status.startswith('failed'):
                cells += ['-', '-', (status or '-').split(':')[0]]
                continue
            err = max(e.get(f'{kind}_err_out', 0.0), e.get(f'{kind}_err_grad', 0.0))
            cells += [fmt(e.get(f'time_x_{kind}'), '{:.2f}x'), fmt(e.get(f'mem_x_{kind}'), '{:.3f}x'),
                      f'{err:.1e}' + ('' if status == 'ok' else ' !')]
        if e['status'] != 'ok':
            cells[0] += f" ({e['status']})"
        lines.append(cells)
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    out = []
    for j, line in enumerate(lines):
        out.append('  '.join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                             for i, (c, w) in enumerate(zip(line, widths))))
        if j == 0:
            out.append('-' * len(out[0]))
    return '\n'.join(out)


def memory_scaling(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """For each (block, implementation, B, C) measured at several ``N``: the extra peak memory at each ``N``
    and its growth factor from the previous ``N`` (linear memory: about 2 when ``N`` doubles)."""
    series: Dict[Tuple, List[Tuple[int, float]]] = {}
    for r in rows:
        if r.get('peak_mib') is None or r['status'] not in ('ok', 'numbers differ'):
            continue
        key = (r['block'], r.get('cfg', '{}'), r['impl'], r['shape'][0], r['shape'][1], r['device'], r['dtype'])
        series.setdefault(key, []).append((r['positions'], r['peak_mib']))
    out = []
    for (block, cfg, impl, b, c, device, dtype), points in series.items():
        points.sort()
        if len(points) < 2:
            continue
        steps = [dict(positions=n, peak_mib=m, growth=(m / points[i - 1][1]) if i else None,
                      n_growth=(n / points[i - 1][0]) if i else None) for i, (n, m) in enumerate(points)]
        out.append(dict(block=block, cfg=cfg, impl=impl, batch=b, channels=c, device=device, dtype=dtype,
                        steps=steps, max_growth_per_doubling=max(
                            math.log(s['growth']) / math.log(s['n_growth']) * math.log(2) for s in steps[1:])))
    return out


def format_scaling(rows: Sequence[Dict[str, Any]]) -> str:
    """The memory growth of :func:`memory_scaling` as text (empty when no block ran at several ``N``)."""
    lines = []
    for s in memory_scaling(rows):
        cells = ', '.join(f"N={st['positions']}: {st['peak_mib']:.1f}" +
                          (f" (x{st['growth']:.2f})" if st['growth'] else '') for st in s['steps'])
        exponent = s['max_growth_per_doubling']
        lines.append(f"{s['block']} {s['impl']} (B={s['batch']}, C={s['channels']}) extra MiB: {cells}; "
                     f"largest growth per doubling of N: x{math.exp(exponent):.2f}")
    return '\n'.join(lines)


CSV_FIELDS = ('block', 'cfg', 'shape', 'positions', 'impl', 'path', 'device', 'dtype', 'time_ms',
              'time_min_ms', 'repeats', 'products_ms', 'peak_mib', 'process_peak_rss_mib', 'err_out',
              'err_grad', 'err_branch', 'status')


def write_results(rows: Sequence[Dict[str, Any]], out_dir: str, plot: bool = True,
                  extra: Optional[Dict[str, Any]] = None) -> Dict[str, str]:
    """Write ``results.json`` (rows, ratio table, machine), ``results.csv`` (rows) and ``benchmark.png``.

    Returns:
        dict: the written paths by kind.
    """
    os.makedirs(out_dir, exist_ok=True)
    paths = dict(json=os.path.join(out_dir, 'results.json'), csv=os.path.join(out_dir, 'results.csv'))
    payload = dict(machine=machine_info(), rows=list(rows), ratios=ratio_table(rows),
                   memory_scaling=memory_scaling(rows))
    if extra:
        payload.update(extra)
    with open(paths['json'], 'w') as f:
        json.dump(payload, f, indent=1)
    with open(paths['csv'], 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction='ignore')
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, 'shape': 'x'.join(str(s) for s in r['shape'])})
    if plot:
        paths['png'] = os.path.join(out_dir, 'benchmark.png')
        plot_results(rows, paths['png'])
    return paths


def plot_results(rows: Sequence[Dict[str, Any]], path: str) -> None:
    """Log-log plot of time and extra peak memory against ``N``, one line per (block, implementation, B, C)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    series: Dict[str, List[Tuple[int, Optional[float], Optional[float]]]] = {}
    for r in rows:
        if r['status'] not in ('ok', 'numbers differ'):
            continue
        label = f"{r['block']} {r['impl']} B={r['shape'][0]} C={r['shape'][1]}"
        series.setdefault(label, []).append((r['positions'], r.get('time_ms'), r.get('peak_mib')))
    for label, points in sorted(series.items()):
        points.sort()
        for ax, idx in ((axes[0], 1), (axes[1], 2)):
            pts = [(p[0], p[idx]) for p in points if p[idx] is not None and p[idx] > 0]
            if pts:
                ax.plot(*zip(*pts), marker='o', label=label)
    for ax, title in ((axes[0], 'forward + backward time (ms)'), (axes[1], 'extra peak memory (MiB)')):
        ax.set_title(title)
        if not ax.lines:  # --no-time / --no-memory
            ax.text(0.5, 0.5, 'not measured', ha='center', va='center', transform=ax.transAxes)
            ax.set_axis_off()
            continue
        ax.set_xscale('log', base=2)
        ax.set_yscale('log')
        ax.set_xlabel('positions N')
        ax.grid(True, which='both', alpha=0.3)
    drawn = [ax for ax in axes if ax.lines]
    if drawn:  # one legend, on the first panel with lines
        drawn[0].legend(fontsize=6, loc='best')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine_info() -> Dict[str, Any]:
    """CPU model, cores, load average, torch version and (when there is one) the GPU."""
    info: Dict[str, Any] = dict(torch=torch.__version__, threads=torch.get_num_threads(),
                                cpus=os.cpu_count(), python=sys.version.split()[0],
                                load_average=[round(v, 2) for v in os.getloadavg()])
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    info['cpu'] = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    gpu_capability=f'{props.major}.{props.minor}', cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    return info
