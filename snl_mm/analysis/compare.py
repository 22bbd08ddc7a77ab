"""The six blocks (and any ``GraphNonlocalBlock`` config) trained side by side on one task, over several seeds.

Each run trains a task config (``configs/relation/*``, or any config with a ``block_site``) through mmengine's
Runner, with one block inserted at the config's ``block_site`` (none for the baseline), then tests the last
weights on the task's test split. Runs go to a pool of fresh worker processes (one run per process, each with
``threads`` CPU threads), so that a run's peak memory is its own and runs proceed in parallel. Measured per run:

* top-1 accuracy on the test split (after the last epoch; no checkpoint selection), and the validation
  accuracy after every epoch and the training loss at every iteration (the learning curves);
* training time per iteration: the median wall time from the start of an iteration to its end (data
  preprocessing, forward, backward, optimiser step; data loading excluded);
* the peak resident memory of the run's process (``ru_maxrss``; on CUDA the allocator's peak);
* for the first seed of each model: parameters and FLOPs (multiply-accumulates of one sample, as
  :mod:`snl_mm.analysis.flops` counts them) and the extra peak memory of one training step at the
  training batch size (``snl_mm.analysis.benchmark.peak_memory_mib``).

The training seed sets the weights' initialisation and the data order; the data are the task's (fixed seed).
"""
import ast
import copy
import os
import os.path as osp
import resource
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

#: the tasks of the benchmark of long-range relations, by name: their configs under ``configs/relation``
TASKS: Dict[str, str] = {
    'pair': 'preresnet20_pair.py',
    'majority': 'preresnet20_majority.py',
    'pathfinder': 'preresnet20_pathfinder.py',
    'video': 'i3d-tiny_video-relation.py',
}
#: the dataset types whose samples a run may cache (:func:`snl_mm.datasets.generated.load_or_generate`)
GENERATED = ('snl_mm.RelationDataset', 'snl_mm.MajorityDataset', 'snl_mm.PathfinderDataset',
             'snl_mm.VideoRelationDataset')
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
BASELINE = 'baseline'


def task_config(task: str) -> str:
    """The config file of a task name of :data:`TASKS`, or ``task`` itself when it is a file."""
    if osp.isfile(task):
        return task
    if task not in TASKS:
        raise ValueError(f'unknown task {task!r}: give a config file or one of {sorted(TASKS)}')
    return osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs', 'relation',
                    TASKS[task])


@dataclass
class Variant:
    """One model of the comparison: a name and the block config inserted at the task's site (None: baseline)."""

    name: str
    block: Optional[Dict[str, Any]] = None


def make_variants(blocks: Sequence[str], graph_blocks: Sequence[str] = (), baseline: bool = True) -> List[Variant]:
    """The baseline, the named registered blocks and ``NAME=DICT`` configs of ``GraphNonlocalBlock``.

    Args:
        blocks: registered block types (``'SNLBlock'``...).
        graph_blocks: ``'NAME={python dict}'``: the arguments of a ``GraphNonlocalBlock``, e.g.
            ``"gsnl3={'graph_filter': {'order': 3}}"``.
        baseline: whether the network without a block is a variant.

    Raises:
        ValueError: an unknown block type or a malformed ``NAME=DICT``, naming the valid choices.
    """
    from snl_mm.blocks import registered_blocks
    known = registered_blocks()
    variants = [Variant(BASELINE)] if baseline else []
    for name in blocks:
        if name not in known:
            raise ValueError(f'unknown block {name!r}; registered blocks: {sorted(known)}')
        variants.append(Variant(name, dict(type=name)))
    for text in graph_blocks:
        name, sep, body = text.partition('=')
        try:
            args = ast.literal_eval(body) if sep else None
        except (ValueError, SyntaxError):
            args = None
        if not name or not isinstance(args, dict):
            raise ValueError(f'--graph-block {text!r}: expected NAME={{python dict of GraphNonlocalBlock arguments}}, '
                             "e.g. \"gsnl3={'graph_filter': {'order': 3}}\"")
        variants.append(Variant(name.strip(), dict(type='GraphNonlocalBlock', **args)))
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f'variant names must differ, got {names}')
    return variants


def run_config(config: str, variant: Variant, seed: int, work_dir: str, cfg_options: Optional[Dict] = None,
               cache_dir: Optional[str] = None):
    """The config of one run: the task config, ``cfg_options`` merged, the variant's block at ``block_site``."""
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if variant.block is not None:
        site = cfg.get('block_site')
        if site is None:
            raise KeyError(f'{config} has no block_site: add one (a plugin entry without cfg, e.g. '
                           "dict(stages=(True, ), position='after_block', blocks=(1, ))) to say where blocks go")
        cfg.model.backbone.plugins = [dict(cfg=copy.deepcopy(variant.block), **site)]
    cfg.randomness = dict(seed=seed, deterministic=False)
    cfg.work_dir = work_dir
    cfg.launcher = 'none'
    for loader in LOADERS:
        dataset = (cfg.get(loader) or {}).get('dataset') or {}
        if cache_dir and dataset.get('type') in GENERATED:
            dataset['cache_dir'] = cache_dir
    return cfg


def _recorder():
    """A hook recording iteration times, training losses and validation metrics (an mmengine Hook subclass,
    made here so that importing this module needs no mmengine)."""
    from mmengine.hooks import Hook

    class Recorder(Hook):
        priority = 'VERY_LOW'

        def __init__(self) -> None:
            self.iter_s: List[float] = []
            self.loss: List[float] = []
            self.val: List[Dict[str, float]] = []
            self._start = 0.
            self.on_val: Optional[Callable[[int, float], None]] = None

        def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
            self._start = time.perf_counter()

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            self.iter_s.append(time.perf_counter() - self._start)
            if outputs and 'loss' in outputs:
                self.loss.append(float(outputs['loss'].detach()))

        def after_val_epoch(self, runner, metrics=None) -> None:
            self.val.append({k: float(v) for k, v in (metrics or {}).items()})
            if self.on_val is not None and metrics:
                self.on_val(runner.epoch, top1(self.val[-1]))

    return Recorder()


def top1(metrics: Dict[str, float]) -> float:
    """The top-1 accuracy (%) of a metrics dict of mmpretrain (``accuracy/top1``, %) or mmaction2 (``acc/top1``,
    a fraction)."""
    if 'accuracy/top1' in metrics:
        return float(metrics['accuracy/top1'])
    if 'acc/top1' in metrics:
        return 100. * float(metrics['acc/top1'])
    raise KeyError(f'no top-1 accuracy among the metrics {sorted(metrics)}')


def measure_cost(runner) -> Dict[str, float]:
    """Parameters and FLOPs of one sample, and the extra peak memory of one training step, of a runner's model."""
    import torch

    from snl_mm.analysis.benchmark import peak_memory_mib
    from snl_mm.analysis.flops import TensorForward, analyze
    model = runner.model
    batch = next(iter(runner.train_dataloader))
    data = model.data_preprocessor(batch, True)
    model.eval()
    with torch.no_grad():
        report = analyze(TensorForward(model), (data['inputs'][:1], ))
    model.train()

    def step() -> None:
        losses = model(**data, mode='loss')
        model.parse_losses(losses)[0].backward()

    device = next(model.parameters()).device
    step_mib = peak_memory_mib(step, device)
    model.zero_grad(set_to_none=True)
    return dict(params=report.params, flops=report.flops, step_mib=step_mib,
                block_params=report.added()[1], block_flops=report.added()[0])


class _Direct:
    """A queue that hands each message to a function at once (runs in this process)."""

    def __init__(self, handle: Callable[[Dict[str, Any]], None]) -> None:
        self.put = handle


def _notify(queue, message: Dict[str, Any]) -> None:
    if queue is not None:
        queue.put(message)


def train_one(spec: Dict[str, Any], seed: int, cost: bool) -> Dict[str, Any]:
    """Train, test and measure one run of a variant (see :func:`run_variant`)."""
    import torch

    from snl_mm.registry import build_runner
    variant = Variant(**spec['variant'])
    work_dir = osp.join(spec['out_dir'], variant.name, f'seed{seed}')
    cfg = run_config(spec['config'], variant, seed, work_dir, spec.get('cfg_options'), spec.get('cache_dir'))
    runner = build_runner(cfg)
    recorder = _recorder()
    runner.register_hook(recorder)
    epochs = cfg.train_cfg.get('max_epochs')
    recorder.on_val = lambda epoch, acc: _notify(spec.get('queue'), dict(
        event='epoch', variant=variant.name, seed=seed, epoch=epoch, epochs=epochs, top1=acc))
    start = time.perf_counter()
    runner.train()
    train_s = time.perf_counter() - start
    test = runner.test()
    record = dict(variant=variant.name, block=variant.block, seed=seed, work_dir=work_dir, top1=top1(test),
                  test_metrics={k: float(v) for k, v in test.items()}, train_s=train_s,
                  iters=len(recorder.iter_s), iter_ms=1e3 * statistics.median(recorder.iter_s),
                  loss=recorder.loss, val_top1=[top1(m) for m in recorder.val if m],
                  peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.)
    if torch.cuda.is_available():
        record['peak_cuda_mib'] = torch.cuda.max_memory_allocated() / 2**20
    if cost:
        record.update(measure_cost(runner))
    return record


def run_variant(spec: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Every seed of one variant, one after the other in this process; the worker of :func:`compare`.

    Args:
        spec (dict): ``config``, ``variant`` (name, block), ``seeds``, ``out_dir`` (runs go to
            ``{out_dir}/{variant}/seed{k}``), ``cfg_options``, ``cache_dir``, ``threads``, ``quiet`` (send the
            console output to ``{out_dir}/{variant}/run.log``), ``queue`` (receives a message per validation and
            per finished run, or None). The parameters, FLOPs and step memory are measured on the first seed;
            ``peak_rss_mib`` is the process's peak so far, so with one process per variant it is the variant's.
    """
    variant_dir = osp.join(spec['out_dir'], spec['variant']['name'])
    os.makedirs(variant_dir, exist_ok=True)
    if spec.get('quiet'):
        log = os.open(osp.join(variant_dir, 'run.log'), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
    import torch
    if spec.get('threads'):
        torch.set_num_threads(spec['threads'])
    records = []
    for index, seed in enumerate(spec['seeds']):
        record = train_one(spec, seed, cost=index == 0)
        _notify(spec.get('queue'), dict(event='run', **{k: record[k] for k in
                                                        ('variant', 'seed', 'top1', 'iters', 'train_s', 'iter_ms')}))
        records.append(record)
    return records


def summarise(records: Sequence[Dict[str, Any]], order: Sequence[str]) -> List[Dict[str, Any]]:
    """One row per variant (in ``order``), ranked by mean top-1: accuracy mean, sample standard deviation,
    minimum and maximum over the seeds, and the costs; ``added_*`` relative to the baseline when it ran."""
    rows = []
    for name in order:
        runs = [r for r in records if r['variant'] == name]
        if not runs:
            continue
        acc = [r['top1'] for r in runs]
        costed = next((r for r in runs if 'flops' in r), {})
        rows.append(dict(variant=name, block=runs[0]['block'], seeds=[r['seed'] for r in runs], top1=acc,
                         mean=statistics.fmean(acc), std=statistics.stdev(acc) if len(acc) > 1 else 0.,
                         min=min(acc), max=max(acc), params=costed.get('params'), flops=costed.get('flops'),
                         step_mib=costed.get('step_mib'), iter_ms=statistics.median(r['iter_ms'] for r in runs),
                         train_s=statistics.fmean(r['train_s'] for r in runs),
                         peak_rss_mib=max(r['peak_rss_mib'] for r in runs)))
    base = next((r for r in rows if r['variant'] == BASELINE), None)
    for row in rows:
        for key in ('params', 'flops', 'step_mib'):
            ok = base is not None and row[key] is not None and base[key] is not None
            row[f'added_{key}'] = row[key] - base[key] if ok else None
    rows.sort(key=lambda r: -r['mean'])
    for rank, row in enumerate(rows, 1):
        row['rank'] = rank
    return rows


def compare(config: str, variants: Sequence[Variant], seeds: Sequence[int], out_dir: str, jobs: int = 2,
            threads: int = 1, cfg_options: Optional[Dict] = None, isolate: bool = True,
            progress: Callable[[str], None] = print) -> Dict[str, Any]:
    """Train every variant with every seed on ``config`` and summarise.

    Args:
        config (str): the task config (with a ``block_site``).
        variants (sequence[Variant]): the models (:func:`make_variants`).
        seeds (sequence[int]): training seeds.
        out_dir (str): where the runs (``{variant}/seed{k}``), the data cache and the results go.
        jobs (int): variants trained at a time, each in its own fresh process.
        threads (int): CPU threads of each run.
        cfg_options (dict, optional): overrides merged into every run's config.
        isolate (bool): one fresh process per variant (memory measured per variant, runs in parallel); False
            runs everything here, one run after the other.
        progress (callable): receives one line per validation and per finished run.

    Returns:
        dict: ``records`` (one per run), ``rows`` (:func:`summarise`, best first), ``order`` (the models as given),
        ``wall_s``, ``load`` (the 1-minute load average sampled during the comparison: start, mean, max, end), and
        the settings.
    """
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from multiprocessing import get_context
    if not variants or not seeds:
        raise ValueError('nothing to compare: give at least one variant and one seed')
    context = get_context('spawn')
    manager = context.Manager() if isolate else None
    queue = manager.Queue() if isolate else None
    specs = [dict(config=config, variant=dict(name=v.name, block=v.block), seeds=list(seeds), out_dir=out_dir,
                  cfg_options=cfg_options, cache_dir=osp.join(out_dir, 'data_cache'), threads=threads,
                  quiet=isolate, queue=queue) for v in variants]
    total = len(specs) * len(seeds)
    load = [os.getloadavg()[0]]
    start = time.perf_counter()
    finished = [0]

    def show(message: Dict[str, Any]) -> None:
        elapsed = time.perf_counter() - start
        head = f'{message["variant"]:<12} seed {message["seed"]}'
        if message['event'] == 'epoch':
            progress(f'    {head}: epoch {message["epoch"]}/{message["epochs"]}, validation top-1 '
                     f'{message["top1"]:5.1f} % | elapsed {elapsed / 60:.1f} min')
            return
        finished[0] += 1
        eta = elapsed / finished[0] * (total - finished[0])
        progress(f'[{finished[0]:>{len(str(total))}}/{total}] {head}: test top-1 {message["top1"]:5.1f} %, '
                 f'{message["iters"]} iterations in {message["train_s"]:.0f} s ({message["iter_ms"]:.0f} ms each) | '
                 f'elapsed {elapsed / 60:.1f} min, about {eta / 60:.1f} min to go')

    records: List[Dict[str, Any]] = []
    if not isolate:
        for spec in specs:
            spec['queue'] = _Direct(show)
            records.extend(run_variant(spec))
            load.append(os.getloadavg()[0])
    else:
        try:
            with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=context, max_tasks_per_child=1) as pool:
                pending = {pool.submit(run_variant, spec) for spec in specs}
                while pending:
                    done, pending = wait(pending, timeout=5, return_when=FIRST_COMPLETED)
                    load.append(os.getloadavg()[0])
                    while not queue.empty():
                        show(queue.get())
                    for future in done:
                        records.extend(future.result())
        finally:
            manager.shutdown()
    wall_s = time.perf_counter() - start
    load.append(os.getloadavg()[0])
    order = [v.name for v in variants]
    return dict(records=records, rows=summarise(records, order), order=order, wall_s=wall_s, config=config,
                seeds=list(seeds), jobs=jobs, threads=threads, cfg_options=cfg_options or {},
                load=dict(start=load[0], mean=statistics.fmean(load), max=max(load), end=load[-1]))
