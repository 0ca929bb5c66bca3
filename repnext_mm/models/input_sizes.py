"""The input sizes (height, width) a RepNeXt model is checked, exported and measured at when
nothing else (an option, a config's test pipeline) gives one."""

#: Classifiers: the ImageNet test crop the paper reports its results and latencies at.
CLASSIFIER_INPUT_SIZE = (224, 224)
#: Bare backbones, detectors and segmentors: the paper's backbone latency setting.
DENSE_INPUT_SIZE = (512, 512)
