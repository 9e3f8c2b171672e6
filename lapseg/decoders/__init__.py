"""Segmentation decoders, one paper per file; build them by name with `lapseg.create_model`.

Every decoder is a linen module with a `backbone` submodule field (a module from
`lapseg.backbones.create`, whose params sit under `params['backbone']`), reads the
backbone's features by name (`backbone.feature_info()` gives strides and channels), and
maps images `[N, H, W, 3]` to a dict whose `'logits'` are `[N, H, W, num_classes]`, with
auxiliary outputs beside it under keys the decoder documents.

  fcn.py          FCN-32s/16s/8s (Long et al., CVPR 2015)
  lrr.py          Laplacian pyramid reconstruction and refinement (Ghiasi & Fowlkes, ECCV 2016)
  refinenet.py    RefineNet (Lin et al., CVPR 2017)
  pspnet.py       PSPNet (Zhao et al., CVPR 2017)
  icnet.py        ICNet (Zhao et al., ECCV 2018)
  gcn.py          Large kernel matters (Peng et al., CVPR 2017)
  dupsampling.py  Data-dependent upsampling (Tian et al., CVPR 2019)
  dsrl.py         Dual super-resolution learning (Wang et al., CVPR 2020)
  dfn.py          Discriminative feature network (Yu et al., CVPR 2018)

Every factory takes `num_classes`, `backbone` / `backbone_kwargs` (built by
`lapseg.backbones.build`, with the decoder's per-backbone defaults), `dtype`, `param_dtype`
and the decoder's fields. Field names follow one convention: `features` names the backbone
features read (deepest first), `channels` is the decoder's main width and `<part>_channels`
any other width.

This package imports none of them: `lapseg.models` imports each on first use. Decoders sit
below the registry (ops -> layers -> backbones -> decoders -> models): no decoder file
imports another decoder file or `lapseg.models` (wrappers such as DSRL get their base
decoder already built).
"""
