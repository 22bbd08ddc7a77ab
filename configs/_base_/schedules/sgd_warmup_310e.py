# The CIFAR schedule of the paper as its code runs it (zh460045050/SNL_ICCV2021, SNL-Classification/train_val.py:
# 140-167, branches `cifar10` and `cifar100`; 361-365, 371-374, 546-561): SGD, lr 0.1, momentum 0.9, weight decay
# 1e-4; 10 epochs of linear warm-up from lr x 0.1^2 (0.1 to the power of the number of drops) to lr, one value per
# epoch; then the 300 epochs of the paper with lr / 10 after 150 and 250 of them: 310 epochs, drops at epochs 160
# and 260; batch 128. The script sets `args.warmup = True` for every dataset and shifts the drops by the warm-up
# (`lr_drop_epoch_list + WARMUP_EPOCHS`), and evaluates every 5 epochs (`eval_freq`, :417).
# The paper (Sec. 3.1) does not mention the warm-up: "The initial learning rate 0.1 is used with the weight decay
# 10^-4 and momentum 0.9. The learning rate is divided by 10 at 150 and 250 epochs. All the models are trained for
# 300 epochs." The config follows the code, which produced the numbers.
warmup_epochs = 10
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, end_factor=1.0, by_epoch=True, begin=0, end=warmup_epochs),
    # milestones count from `begin`: lr / 10 at epochs 10 + 150 and 10 + 250
    dict(type='MultiStepLR', by_epoch=True, begin=warmup_epochs, end=warmup_epochs + 300, milestones=[150, 250],
         gamma=0.1)
]
train_cfg = dict(by_epoch=True, max_epochs=warmup_epochs + 300, val_interval=5)
val_cfg = dict()
test_cfg = dict()
# the script's batch: 128 images on one GPU (train_all_CIFAR100.sh runs it with CUDA_VISIBLE_DEVICES=0 and the
# default --num_gpu 1, train_val.py:52, 352-355); `--auto-scale-lr` scales the lr from it
auto_scale_lr = dict(base_batch_size=128)
