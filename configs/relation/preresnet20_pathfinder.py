# The connectivity task of the benchmark of long-range relations (compare_blocks.py --task pathfinder), in the
# spirit of Long Range Arena's Pathfinder: the pair task's network and schedule on PathfinderDataset at 24 x 24:
# two markers on the ends of a curve of four 4-px segments, two distractor curves, and one gap of 3 px that cuts
# either the marked curve (label "not connected") or a distractor ("connected"). Only following the curve from
# one marker tells whether it reaches the other. Flips keep connectivity: the pair task's pipeline applies.
_base_ = './preresnet20_pair.py'

pathfinder = dict(img_size=24, num_distractors=2, num_segments=4, segment_length=4, max_turn=0.7, gap=3,
                  marker_size=3, min_distance=9, noise_std=10, seed=0)
dataset = dict(_delete_=True, type='snl_mm.PathfinderDataset', **pathfinder)
train_dataloader = dict(
    dataset=dict(**dataset, split='train', num_samples={{_base_.num_train}}, pipeline={{_base_.train_pipeline}}))
val_dataloader = dict(
    dataset=dict(**dataset, split='val', num_samples={{_base_.num_val}}, pipeline={{_base_.test_pipeline}}))
test_dataloader = dict(
    dataset=dict(**dataset, split='test', num_samples={{_base_.num_test}}, pipeline={{_base_.test_pipeline}}))
