"""Rename the keys of a checkpoint, so that blocks trained under other names load into blocks inserted by config.

A block inserted by a plugin entry is named by the entry (``name='non_local_block'``) or by its abbreviation
(``snl_block``) and sits inside the module it follows. Checkpoints of networks that hold their blocks elsewhere load
once their keys are renamed, for instance mmaction2's TSM non-local models, which wrap each residual block
(``layer2.1.block.conv1...`` and ``layer2.1.non_local_block...``)::

    python tools/misc/rename_checkpoint_keys.py tsm_nl.pth tsm_nl_renamed.pth \\
        --rename '^(backbone\\.layer\\d\\.\\d+)\\.block\\.=\\1.' \\
        --rename '^(backbone\\.layer\\d\\.\\d+)\\.non_local_block\\.=\\1.nl_block.'

Each ``--rename PATTERN=REPLACEMENT`` is a Python regular expression applied to every key in turn (``re.sub``). The
checkpoint's other entries (``meta``, optimizer state) are kept; the tool prints every key it changed and refuses to
write a checkpoint in which two keys collide.
"""
import argparse
import re
from typing import Dict, List, Tuple

import torch


def parse_rules(rules: List[str]) -> List[Tuple[re.Pattern, str]]:
    parsed = []
    for rule in rules:
        pattern, sep, replacement = rule.partition('=')
        if not sep or not pattern:
            raise ValueError(f'--rename must be PATTERN=REPLACEMENT, got {rule!r}')
        parsed.append((re.compile(pattern), replacement))
    return parsed


def rename_keys(state_dict: Dict[str, torch.Tensor], rules: List[Tuple[re.Pattern, str]]) -> Dict[str, str]:
    """``{old key: new key}`` for every key a rule changes; raises on a collision."""
    renamed, targets = {}, {}
    for key in state_dict:
        new = key
        for pattern, replacement in rules:
            new = pattern.sub(replacement, new)
        if new in targets:
            raise ValueError(f'{key!r} and {targets[new]!r} would both become {new!r}')
        targets[new] = key
        if new != key:
            renamed[key] = new
    return renamed


def main() -> None:
    parser = argparse.ArgumentParser(description='Rename the keys of a checkpoint (regular expressions)')
    parser.add_argument('src', help='checkpoint to read (a state dict, or a dict with "state_dict")')
    parser.add_argument('dst', help='checkpoint to write')
    parser.add_argument('--rename', action='append', required=True, metavar='PATTERN=REPLACEMENT',
                        help='a regular expression and its replacement, applied to every key (repeatable)')
    args = parser.parse_args()
    checkpoint = torch.load(args.src, map_location='cpu', weights_only=True)
    state_dict = checkpoint.get('state_dict', checkpoint)
    renamed = rename_keys(state_dict, parse_rules(args.rename))
    new_state = {renamed.get(k, k): v for k, v in state_dict.items()}
    if 'state_dict' in checkpoint:
        checkpoint['state_dict'] = new_state
    else:
        checkpoint = new_state
    torch.save(checkpoint, args.dst)
    for old, new in renamed.items():
        print(f'{old} -> {new}')
    print(f'{len(renamed)} of {len(state_dict)} keys renamed; written to {args.dst}')


if __name__ == '__main__':
    main()
