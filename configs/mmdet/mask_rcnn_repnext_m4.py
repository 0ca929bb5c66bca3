# Alias: Mask R-CNN + FPN with RepNeXt-M4 on COCO 2017, 1x schedule (the paper's M4 entry,
# box AP 42.7 / mask AP 39.2).
_base_ = './mask_rcnn_repnext_m4_fpn_1x_coco.py'
