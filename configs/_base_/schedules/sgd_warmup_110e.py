# The ImageNet schedule of the paper as its code runs it (zh460045050/SNL_ICCV2021, SNL-Classification/train_val.py:
# 174-186, the branch of every dataset but CIFAR; 361-365, 371-374, 546-561): SGD, lr 0.01, momentum 0.9, weight
# decay 1e-4; 10 epochs of linear warm-up from lr x 0.1^3 (0.1 to the power of the number of drops) to lr, one value
# per epoch; then 100 epochs with lr / 10 after 31, 61 and 81 of them: 110 epochs, drops at epochs 41, 71 and 91;
# batch 100; evaluation every 5 epochs (:417). The CUB configs do not use it: the paper gives CUB a schedule of its
# own (configs/cub/resnet50_8xb8-110e_cub.py).
# The paper (Sec. 3.2) garbles the sentence: "The learning rate is divided by 31 at 61 and 81 epochs. All the models
# are trained for 110 epochs." The code's `lr_drop_epoch_list = [31, 61, 81]`, `epochs = 100` and 10 warm-up epochs
# give the 110; the config follows the code, which produced the numbers.
warmup_epochs = 10
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, end_factor=1.0, by_epoch=True, begin=0, end=warmup_epochs),
    # milestones count from `begin`: lr / 10 at epochs 10 + 31, 10 + 61 and 10 + 81
    dict(type='MultiStepLR', by_epoch=True, begin=warmup_epochs, end=warmup_epochs + 100, milestones=[31, 61, 81],
         gamma=0.1)
]
train_cfg = dict(by_epoch=True, max_epochs=warmup_epochs + 100, val_interval=5)
val_cfg = dict()
test_cfg = dict()
# the script's batch: 100 images on one GPU (train_snl.sh runs it with CUDA_VISIBLE_DEVICES=0 and the default
# --num_gpu 1, train_val.py:52, 352-355); `--auto-scale-lr` scales the lr from it
auto_scale_lr = dict(base_batch_size=100)
