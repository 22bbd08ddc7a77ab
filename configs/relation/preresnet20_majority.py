# The counting task of the benchmark of long-range relations (compare_blocks.py --task majority): the pair task's
# network and schedule on MajorityDataset: five objects of 5 px, pairwise at least 9 px apart, in 4 colours; label
# "one colour holds a majority" (3 of 5) or not (2 + 2 + 1: a near miss). No colour histogram a network adds up
# position by position separates the classes: the objects must be compared with one another.
_base_ = './preresnet20_pair.py'

majority = dict(img_size=24, object_size=5, num_objects=5, min_distance=9, num_colors=4, noise_std=10, seed=0)
dataset = dict(_delete_=True, type='snl_mm.MajorityDataset', **majority)
train_dataloader = dict(
    dataset=dict(**dataset, split='train', num_samples={{_base_.num_train}}, pipeline={{_base_.train_pipeline}}))
val_dataloader = dict(
    dataset=dict(**dataset, split='val', num_samples={{_base_.num_val}}, pipeline={{_base_.test_pipeline}}))
test_dataloader = dict(
    dataset=dict(**dataset, split='test', num_samples={{_base_.num_test}}, pipeline={{_base_.test_pipeline}}))
