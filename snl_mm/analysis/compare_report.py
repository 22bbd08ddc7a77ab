"""What a block comparison (:mod:`snl_mm.analysis.compare`) writes: the Markdown table, the JSON of every run,
and the figures in the package's style (:mod:`snl_mm.analysis.style`), accuracy against cost and learning curves,
each as PNG, PDF and SVG.
"""
import os
import os.path as osp
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .style import paper_style, pyplot, save_figure, series_style


def _num(value: Optional[float], pattern: str) -> str:
    return '-' if value is None else format(value, pattern)


def format_table(rows: Sequence[Dict[str, Any]]) -> str:
    """The comparison as a Markdown table, best mean accuracy first."""
    n = max((len(r['top1']) for r in rows), default=0)
    lines = [f'| rank | model | top-1 % (mean ± std, {n} seeds) | min - max | params | FLOPs / sample | '
             'time / iter (ms) | step memory (MiB) | peak RSS (MiB) |', '|---' * 9 + '|']
    for r in rows:
        params = _num(r['params'], ',') + ('' if r['added_params'] in (None, 0) else f' (+{r["added_params"]:,})')
        flops = '-' if r['flops'] is None else f'{r["flops"] / 1e6:.1f} M' + (
            '' if not r['added_flops'] else f' (+{r["added_flops"] / 1e6:.1f} M)')
        lines.append(f'| {r["rank"]} | {r["variant"]} | {r["mean"]:.1f} ± {r["std"]:.1f} | {r["min"]:.1f} - '
                     f'{r["max"]:.1f} | {params} | {flops} | {r["iter_ms"]:.0f} | {_num(r["step_mib"], ".1f")} | '
                     f'{r["peak_rss_mib"]:.0f} |')
    return '\n'.join(lines)


def write_results(result: Dict[str, Any], out_dir: str, plots: bool = True) -> Dict[str, List[str]]:
    """``results.json`` (every run, the summary, the machine, wall time and load), ``table.md`` and, with ``plots``,
    the figures (:func:`plot_accuracy_vs_cost`, :func:`plot_learning_curves`; PNG, PDF, SVG).

    Returns:
        dict: the written files by kind.
    """
    import json

    from snl_mm.analysis.benchmark import machine_info
    os.makedirs(out_dir, exist_ok=True)
    written: Dict[str, List[str]] = dict(json=[osp.join(out_dir, 'results.json')],
                                         table=[osp.join(out_dir, 'table.md')])
    with open(written['json'][0], 'w') as f:
        json.dump(dict(machine=machine_info(), **result), f, indent=1)
    with open(written['table'][0], 'w') as f:
        f.write(format_table(result['rows']) + '\n')
    if plots:
        # colours follow the models as given (the baseline first), the same in both figures
        order = result.get('order') or [r['variant'] for r in result['rows']]
        written['accuracy_vs_cost'] = plot_accuracy_vs_cost(result['rows'], osp.join(out_dir, 'accuracy_vs_cost.png'),
                                                            order)
        written['learning_curves'] = plot_learning_curves(result['records'], order,
                                                          osp.join(out_dir, 'learning_curves.png'))
    return written


def _styles(names: Sequence[str]) -> Dict[str, Dict[str, str]]:
    return {name: series_style(i) for i, name in enumerate(names)}


def plot_accuracy_vs_cost(rows: Sequence[Dict[str, Any]], path: str, order: Optional[Sequence[str]] = None,
                          title: str = '') -> List[str]:
    """Top-1 accuracy (mean and standard deviation over the seeds, each seed a small dot) against FLOPs per sample
    and against training time per iteration, one marker per model.

    Args:
        rows: the summary rows of :func:`snl_mm.analysis.compare.summarise`.
        path: the PNG to write (PDF and SVG beside it).
        order: the models in the order their colours are given (the rows' order by default).
        title: the figure title.
    """
    plt = pyplot()
    styles = _styles(order or [r['variant'] for r in rows])
    panels = (('flops', 1e-6, 'MFLOPs per sample (multiply-accumulates)'),
              ('iter_ms', 1., 'training time per iteration (ms)'))
    with paper_style():
        fig, axes = plt.subplots(1, 2, figsize=(7.0, 2.8), sharey=True)
        for ax, (key, scale, label) in zip(axes, panels):
            drawn = False
            for row in rows:
                if row.get(key) is None:
                    continue
                x = row[key] * scale
                style = styles.get(row['variant'], series_style(0))
                ax.scatter([x] * len(row['top1']), row['top1'], s=8, color=style['color'], alpha=0.35,
                           linewidths=0)
                ax.errorbar([x], [row['mean']], yerr=[row['std']], fmt=style['marker'], color=style['color'],
                            capsize=2, markersize=5, label=row['variant'])
                drawn = True
            ax.set_xlabel(label)
            ax.grid(True)
            if not drawn:
                ax.text(0.5, 0.5, 'not measured', ha='center', va='center', transform=ax.transAxes)
        axes[0].set_ylabel('top-1 accuracy on the test split (%)')
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc='center left', bbox_to_anchor=(1.0, 0.5), frameon=False)
        n = max((len(r['top1']) for r in rows), default=0)
        fig.suptitle(title or f'accuracy against cost (mean ± std over {n} seeds; dots: single seeds)')
        fig.tight_layout()
        written = save_figure(fig, path)
        plt.close(fig)
    return written


def _smooth(values: Sequence[float], window: int) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if len(values) < window or window < 2:
        return values
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode='valid')


def plot_learning_curves(records: Sequence[Dict[str, Any]], order: Sequence[str], path: str,
                         title: str = '') -> List[str]:
    """Validation top-1 after every epoch (mean over the seeds, the band from the worst to the best seed) and the
    training loss at every iteration (moving average over 5% of the run, mean over the seeds), one line per model.

    Args:
        records: the runs of :func:`snl_mm.analysis.compare.compare` (``val_top1``, ``loss`` per run).
        order: the models, in the order their colours are given.
        path: the PNG to write (PDF and SVG beside it).
        title: the figure title.
    """
    plt = pyplot()
    styles = _styles(order)
    with paper_style():
        fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(7.0, 2.8))
        for name in order:
            runs = [r for r in records if r['variant'] == name]
            style = styles[name]
            curves = [r['val_top1'] for r in runs if r['val_top1']]
            if curves:
                length = min(len(c) for c in curves)
                acc = np.array([c[:length] for c in curves])
                epochs = np.arange(1, length + 1)
                acc_ax.plot(epochs, acc.mean(0), color=style['color'], marker=style['marker'], label=name)
                acc_ax.fill_between(epochs, acc.min(0), acc.max(0), color=style['color'], alpha=0.12, linewidth=0)
            losses = [r['loss'] for r in runs if r['loss']]
            if losses:
                length = min(len(c) for c in losses)
                window = max(1, length // 20)
                loss = np.mean([_smooth(c[:length], window) for c in losses], axis=0)
                loss_ax.plot(np.arange(len(loss)) + window, loss, color=style['color'], label=name)
        acc_ax.set_xlabel('epoch')
        acc_ax.xaxis.get_major_locator().set_params(integer=True)
        acc_ax.set_ylabel('validation top-1 (%)')
        loss_ax.set_xlabel('iteration')
        loss_ax.set_ylabel('training loss (moving average)')
        for ax in (acc_ax, loss_ax):
            ax.grid(True)
        handles, labels = acc_ax.get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc='center left', bbox_to_anchor=(1.0, 0.5), frameon=False)
        fig.suptitle(title or 'learning curves (validation: mean over the seeds, band: worst to best seed)')
        fig.tight_layout()
        written = save_figure(fig, path)
        plt.close(fig)
    return written
