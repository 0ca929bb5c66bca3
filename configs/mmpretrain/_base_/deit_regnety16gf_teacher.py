# DeiT's distillation teacher: RegNetY-16GF (82.9% top-1 at 224), as in the RepNeXt paper.
# mmpretrain's RegNet implements RegNetX only (no squeeze-excitation), so the teacher is timm's
# regnety_160 through mmpretrain's TimmClassifier (needs `pip install timm`); its checkpoint is
# DeiT's release (a dict with the weights under 'model'), downloaded once by hand, e.g.
#   mkdir -p checkpoints && wget -P checkpoints \
#       https://dl.fbaipublicfiles.com/deit/regnety_160-a5fe301d.pth
# Nothing is downloaded at run time. Any mmpretrain classifier whose forward(mode='tensor')
# returns 1000-class logits can replace it (e.g. an ImageClassifier with its own checkpoint).
teacher = dict(type='TimmClassifier', model_name='regnety_160', pretrained=False)
teacher_checkpoint = 'checkpoints/regnety_160-a5fe301d.pth'
