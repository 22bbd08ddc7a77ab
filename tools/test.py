# Copyright (c) OpenMMLab. All rights reserved. Adapted for snl_mm.
"""Test (and evaluate) a checkpoint with an OpenMMLab config, as OpenMMLab's ``tools/test.py``.

``snl_mm`` is imported first, in every process, as in ``tools/train.py``.

Examples::

    python tools/test.py configs/demo/preresnet20-snl_relation.py work_dirs/demo/epoch_6.pth
    python tools/test.py CONFIG CKPT --out results.pkl                      # predictions
    python tools/test.py CONFIG CKPT --out metrics.json --out-item metrics  # the metrics
    python tools/test.py CONFIG CKPT --dump predictions.pkl                 # predictions (as mmaction2's)
    python tools/test.py CONFIG CKPT --tta                # the config's test-time augmentation (tta_model)
    python tools/test.py CONFIG CKPT --show-dir vis       # the predictions drawn, one image per sample
    bash tools/dist_test.sh CONFIG CKPT 8
"""
import argparse
import os
import os.path as osp

import snl_mm.compat  # noqa: F401,I001  (registration, and the fixes of mmengine's gaps, before anything is built)
import mmengine
import torch
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.dist import is_main_process
from mmengine.evaluator import DumpResults
from mmengine.runner import CheckpointLoader

from snl_mm.compat.dist import release_process_group
from snl_mm.registry import build_runner


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model (snl_mm, mmpretrain or '
                                     'mmaction2 config)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the directory to save the file containing evaluation metrics')
    parser.add_argument('--out', help='the file to write the predictions (or the metrics) to')
    parser.add_argument(
        '--out-item',
        choices=['metrics', 'pred'],
        help='what --out receives: the predictions (default, a pickle) or the metrics (json/yaml/pkl by '
        'the extension)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file. If the value to '
        'be overwritten is a list, it should be like key="[a,b]" or key=a,b '
        'It also allows nested list/tuple values, e.g. key="[(a,b),(c,d)]" '
        'Note that the quotation marks are necessary and that no white space '
        'is allowed.')
    parser.add_argument('--dump', help='also write the predictions to this pickle file (.pkl / .pickle)')
    parser.add_argument(
        '--tta',
        action='store_true',
        help='test with the config\'s test-time augmentation: its `tta_pipeline` and `tta_model` (mmsegmentation '
        'configs define both)')
    parser.add_argument('--amp', action='store_true', help='enable automatic-mixed-precision test')
    parser.add_argument('--show-dir', help='directory where the visualization images will be saved')
    parser.add_argument('--show', action='store_true', help='display the prediction results in a window')
    parser.add_argument('--interval', type=int, default=1, help='visualize every this many samples')
    parser.add_argument('--wait-time', type=float, default=2, help='display time of every window (s)')
    parser.add_argument(
        '--no-pin-memory', action='store_true', help='disable pin_memory in the dataloader')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    if args.out is None and args.out_item is not None:
        raise ValueError('--out-item needs --out: the file to write to')
    if args.dump is not None and not args.dump.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--dump writes a pickle: give a .pkl or .pickle file, got {args.dump!r}')
    return args


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Merge the command-line arguments into the config."""
    cfg.launcher = args.launcher

    # work_dir is determined in this priority: CLI > segment in file > filename
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])

    cfg.load_from = args.checkpoint
    # a test never resumes an optimizer or a schedule
    cfg.resume = False

    if args.amp:
        cfg.test_cfg = cfg.get('test_cfg', None) or ConfigDict()
        cfg.test_cfg.fp16 = True

    if args.show or args.show_dir is not None:
        hooks = cfg.get('default_hooks', {})
        if 'visualization' not in hooks:
            raise KeyError('--show/--show-dir: the config has no `default_hooks.visualization` '
                           '(a VisualizationHook)')
        hooks.visualization.enable = True
        hooks.visualization.show = args.show
        hooks.visualization.wait_time = args.wait_time
        hooks.visualization.interval = args.interval
        hooks.visualization.out_dir = args.show_dir

    if args.tta:
        if (args.show or args.show_dir is not None) and cfg.get('default_scope') == 'mmpretrain':
            raise ValueError("--tta with --show/--show-dir: mmpretrain's VisualizationHook draws the batch's "
                             'input tensors and cannot draw test-time augmented batches (one list of them per '
                             'augmentation); run the two separately')
        use_tta(cfg)

    loader = cfg.get('test_dataloader', None)
    if loader is not None:
        if cfg.get('default_scope') == 'mmpretrain':
            # mmpretrain's tools/test.py defaults, pinned memory only where CUDA is present
            defaults = ConfigDict(pin_memory=torch.cuda.is_available(),
                                  collate_fn=dict(type='default_collate'))
            defaults.update(loader)
            cfg.test_dataloader = loader = defaults
        if args.no_pin_memory:
            loader['pin_memory'] = False

    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def use_tta(cfg: Config) -> None:
    """Test with the config's test-time augmentation: the test data through ``tta_pipeline``, the model wrapped in
    ``tta_model`` (which merges the augmented predictions), as OpenMMLab's test tools do."""
    missing = [key for key in ('tta_model', 'tta_pipeline') if not cfg.get(key)]
    if missing:
        raise KeyError(f'--tta: the config defines no {" and no ".join(missing)}; test-time augmentation is the '
                       "config's: give both (mmsegmentation's configs do, e.g. configs/cityscapes) or test without "
                       '--tta')
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)


def log_best_scores(runner, checkpoint: str) -> None:
    """Log, beside the scores of the checkpoint just tested, the best scores its training run had recorded when it
    wrote the checkpoint (``CheckpointHook(save_best=[...])``: each metric's best over the evaluations, on its own,
    kept in the checkpoint's message hub; the last checkpoint of a run has the final ones). The paper's tables
    report the best top-1 and, apart, the best top-5 of a run."""
    if not is_main_process():
        return
    info = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu').get('message_hub', {})
    runtime = info.get('runtime_info', {}) if isinstance(info, dict) else {}
    best = {key[len('best_score_'):]: value for key, value in runtime.items() if key.startswith('best_score_')}
    if 'best_score' in runtime:  # one `save_best` metric: mmengine keeps it without its name
        best['the save_best metric'] = runtime['best_score']
    if best:
        runner.logger.info('Best scores of the training run so far (over its evaluations, each on its own): ' +
                           '  '.join(f'{key}: {value:.4f}' for key, value in best.items()))


def main() -> None:
    args = parse_args()
    cfg = merge_args(Config.fromfile(args.config), args)
    runner = build_runner(cfg)

    if args.out and args.out_item in ('pred', None):
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
    if args.dump:
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.dump))

    metrics = runner.test()
    log_best_scores(runner, args.checkpoint)

    if args.out and args.out_item == 'metrics':
        mmengine.dump(metrics, args.out)
    release_process_group()


if __name__ == '__main__':
    main()
