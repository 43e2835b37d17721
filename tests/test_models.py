import pytest
import torch

import common


def test_parameter_budgets():
    assert common.count_params(common.Classifier(200)) <= 5_000_000
    assert common.count_params(common.unet()) <= 2_500_000


def test_classifier_encoder_describes_its_stages():
    m = common.Classifier(10).eval()
    feats = m.encoder(torch.randn(2, 3, 128, 128))
    assert [f.shape[1] for f in feats] == m.encoder.out_channels
    assert [128 // f.shape[-1] for f in feats] == m.encoder.strides == [2, 4, 8, 16, 32]
    assert m(torch.randn(2, 3, 128, 128)).shape == (2, 10)


def test_plain_classifier_stages_are_unet_levels_at_the_same_strides():
    """block="plain": every stage after the stem is a max-pool and double conv (the plain U-Net's `unet_level`), at
    the ResNet-like stages' widths and strides; the option is saved in the config, and a backbone U-Net built from
    that config takes the classifier's weights."""
    m = common.Classifier(10, block="plain").eval()
    feats = m.encoder(torch.randn(2, 3, 128, 128))
    assert [f.shape[1] for f in feats] == m.encoder.out_channels == [32, 64, 128, 256, 384]
    assert [128 // f.shape[-1] for f in feats] == m.encoder.strides == [2, 4, 8, 16, 32]
    for stage in list(m.encoder.stages)[1:]:
        assert isinstance(stage[0][0], torch.nn.MaxPool2d)
        assert not any(isinstance(x, common.BasicBlock) for x in stage.modules())
    assert m.config["block"] == "plain" and "block" not in common.Classifier(10).config
    assert common.count_params(common.build_model(m.config)) == common.count_params(m)
    seg = common.load_backbone(common.backbone_unet(m.config), m)
    for a, b in zip(seg.encoder.backbone.state_dict().values(), m.encoder.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(common.CheckpointError):         # ResNet-like stages do not take plain stages' weights
        common.load_backbone(common.backbone_unet(common.Classifier(10).config), m)
    with pytest.raises(ValueError, match="block"):
        common.Classifier(10, block="dense")


def test_unet_shape_and_levels():
    m = common.unet().eval()
    assert m(torch.randn(2, 3, 128, 128)).shape == (2, 1, 128, 128)
    assert m.encoder.strides == [1, 2, 4, 8, 16]          # 4 levels down, 4 up
    assert len(m.decoder.blocks) == 4
    assert m.encoder.out_channels[0] in (32, 64)


def test_backbone_unet_uses_the_same_decoder_and_classifier_weights():
    cls = common.Classifier(10)
    seg = common.load_backbone(common.backbone_unet(cls.config), cls).eval()
    assert type(seg.decoder) is type(common.unet().decoder)
    assert seg(torch.randn(2, 3, 128, 128)).shape == (2, 1, 128, 128)
    for a, b in zip(seg.encoder.backbone.state_dict().values(), cls.encoder.state_dict().values()):
        assert torch.equal(a, b)


def test_freeze_keeps_encoder_and_bn_statistics_fixed():
    cls = common.Classifier(10)
    seg = common.backbone_unet(cls.config).freeze_encoder()
    seg.train()
    assert not seg.encoder.backbone.training and seg.encoder.adapters.training and seg.decoder.training
    enc_before = {k: v.clone() for k, v in seg.encoder.backbone.state_dict().items()}
    dec_before = {k: v.clone() for k, v in seg.decoder.state_dict().items()}
    opt = torch.optim.AdamW([p for p in seg.parameters() if p.requires_grad], lr=1e-2)
    loss = seg(torch.randn(4, 3, 128, 128)).mean()
    loss.backward()
    opt.step()
    for k, v in seg.encoder.backbone.state_dict().items():
        assert torch.equal(v, enc_before[k]), k                 # weights and running stats unchanged
    assert any(not torch.equal(v, dec_before[k]) for k, v in seg.decoder.state_dict().items())
    assert common.count_params(seg, trainable_only=True) < common.count_params(seg)
    seg.unfreeze_encoder().train()
    assert seg.encoder.backbone.training
    assert common.count_params(seg, trainable_only=True) == common.count_params(seg)


def test_build_model_from_config():
    for m in (common.Classifier(7), common.unet(), common.backbone_unet(common.Classifier(7).config)):
        again = common.build_model(m.config)
        assert common.count_params(again) == common.count_params(m)
        again.load_state_dict(m.state_dict())


def test_flip_tta_is_part_of_the_model_and_of_its_checkpoint(tmp_path):
    """With tta on, the classifier is invariant and the U-Net equivariant to the horizontal flip (in eval mode
    only), and a checkpoint brings the setting back."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 128, 128)
    cls, seg = common.Classifier(5).eval(), common.unet().eval()
    with torch.no_grad():
        assert not torch.allclose(cls(x), cls(x.flip(-1)), atol=1e-5)      # not invariant without TTA
        cls.tta = seg.tta = True
        assert torch.allclose(cls(x), cls(x.flip(-1)), atol=1e-5)
        assert torch.allclose(seg(x).flip(-1), seg(x.flip(-1)), atol=1e-5)
        assert torch.allclose(cls(x), (cls.logits(x) + cls.logits(x.flip(-1))) / 2, atol=1e-6)
    imgs = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    assert not torch.allclose(common.predict(cls, imgs), common.predict(cls, imgs, tta=False), atol=1e-4)
    assert cls.tta                                             # predict(tta=...) does not change the model
    masks = torch.zeros(2, 1, 128, 128)
    with_tta = common.segmentation_results(seg, common.MaskSet(imgs, masks, [0, 1]), threshold=0.5)
    without = common.segmentation_results(seg, common.MaskSet(imgs, masks, [0, 1]), threshold=0.5, tta=False)
    assert not torch.allclose(with_tta["probs"], without["probs"]) and seg.tta
    cls.train()
    assert cls(x).shape == (2, 5)                               # training never averages
    common.save_checkpoint(tmp_path / "c.pt", cls.eval(), task="classification", tta=False)
    loaded, meta = common.load_checkpoint(tmp_path / "c.pt")
    assert loaded.tta and meta["tta"]                           # the model's own setting wins over meta


def test_backbone_unet_full_resolution_skip():
    cls = common.Classifier(10)
    seg = common.backbone_unet(cls.config, full_res=8, decoder=(64, 48, 32, 16, 8))
    assert seg.encoder.strides == [1, 2, 4, 8, 16, 32] and seg.encoder.out_channels[0] == 8
    assert seg.eval()(torch.randn(1, 3, 128, 128)).shape == (1, 1, 128, 128)
    seg.freeze_encoder()
    assert all(p.requires_grad for p in seg.encoder.full.parameters())      # only the classifier's stages freeze
    again = common.build_model(seg.config)
    again.load_state_dict(seg.state_dict())
    with pytest.raises(ValueError, match="5 widths"):
        common.backbone_unet(cls.config, full_res=8, decoder=(64, 48, 32, 16))     # one level too few


def test_backbone_unet_high_resolution_branch():
    """full_res=(w1, w2): the plain U-Net's first two levels on the input; the stride-2 one is concatenated
    with the adapted classifier stem, and it trains while the classifier's stages are frozen."""
    cls = common.Classifier(10)
    seg = common.load_backbone(common.backbone_unet(cls.config, full_res=(8, 12), decoder=(64, 48, 32, 16, 8)),
                               cls).eval()
    assert seg.encoder.strides == [1, 2, 4, 8, 16, 32]
    assert seg.encoder.out_channels == [8, 32 + 12, 64, 96, 128, 192]
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        feats = seg.encoder(x)
        assert [f.shape[1] for f in feats] == seg.encoder.out_channels
        assert [f.shape[-1] for f in feats] == [128, 64, 32, 16, 8, 4]
        hr = common.UNetEncoder((8, 12)).eval()        # the branch is the plain U-Net's first two levels
        hr.stages[0].load_state_dict(seg.encoder.full.state_dict())
        hr.stages[1].load_state_dict(seg.encoder.down[0].state_dict())
        h1, h2 = hr(x)
        assert torch.allclose(feats[0], h1) and torch.allclose(feats[1][:, 32:], h2)
        stem = seg.encoder.adapters[0](cls.eval().encoder.stages[0](x))
        assert torch.allclose(feats[1][:, :32], stem, atol=1e-6)
    assert seg(x).shape == (2, 1, 128, 128)
    seg.freeze_encoder()
    assert all(p.requires_grad for p in [*seg.encoder.full.parameters(), *seg.encoder.down.parameters()])
    assert not any(p.requires_grad for p in seg.encoder.backbone.parameters())
    again = common.build_model(seg.config)
    again.load_state_dict(seg.state_dict())
    with pytest.raises(ValueError, match="upsample=1"):
        common.backbone_unet(cls.config, full_res=(8, 12), upsample=2)


def test_backbone_unet_on_upscaled_input():
    cls = common.Classifier(10)
    seg = common.load_backbone(common.backbone_unet(cls.config, upsample=2), cls).eval()
    assert seg.encoder.strides == [1, 2, 4, 8, 16]             # the classifier's stages, one octave finer
    x = torch.randn(2, 3, 128, 128)
    feats = seg.encoder(x)
    assert [f.shape[-1] for f in feats] == [128, 64, 32, 16, 8]
    assert seg(x).shape == (2, 1, 128, 128)
    # the first skip is the classifier's stem (through its adapter) on the bilinearly upscaled image
    up = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    with torch.no_grad():
        assert torch.allclose(feats[0], seg.encoder.adapters[0](cls.eval().encoder.stages[0](up)), atol=1e-5)
    again = common.build_model(seg.config)
    assert again.encoder.upsample == 2


def test_lowpass_softens_only_what_the_classifier_sees():
    """lowpass=True: the classifier's stages see the frame averaged over 2x2 pixels (a 2-px checkerboard becomes
    its flat mean), the full-resolution block sees the frame itself; the option survives build_model."""
    cls = common.Classifier(10)
    plain = common.load_backbone(common.backbone_unet(cls.config, full_res=8), cls).eval()
    soft = common.backbone_unet(cls.config, full_res=8, lowpass=True).eval()
    soft.load_state_dict(plain.state_dict())          # no weights of its own
    assert "lowpass" not in plain.config and soft.config["lowpass"] is True
    yy, xx = torch.meshgrid(torch.arange(128), torch.arange(128), indexing="ij")
    checker = ((yy + xx) % 2).float().expand(1, 3, 128, 128) * 2 - 1     # mean 0 over every 2x2 block
    flat = torch.zeros(1, 3, 128, 128)
    with torch.no_grad():
        fs, fp, ff = soft.encoder(checker), plain.encoder(checker), plain.encoder(flat)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(fs[1:], ff[1:]))    # classifier: the flat mean
        assert not torch.allclose(fp[1], ff[1], atol=1e-3)        # without lowpass the pattern gets through
        assert torch.equal(fs[0], fp[0])                          # the full-resolution block: the frame itself
    assert common.build_model(soft.config).encoder.lowpass
    assert common.cost_kind(soft.config) == common.cost_kind(plain.config)
    with pytest.raises(ValueError, match="lowpass and upsample"):
        common.backbone_unet(cls.config, lowpass=True, upsample=2)


def test_backbone_unet_on_the_first_stages_only():
    """stages=4: the classifier's stages down to stride 16 (the plain U-Net's depth), their weights loaded from
    the full classifier; the fifth stage is not part of the model at all."""
    cls = common.Classifier(10)
    seg = common.load_backbone(common.backbone_unet(cls.config, full_res=8, stages=4), cls).eval()
    assert seg.encoder.strides == [1, 2, 4, 8, 16] and len(seg.decoder.blocks) == 4
    assert seg.config["adapters"] == [32, 64, 96, 128] and seg.config["decoder"] == [96, 64, 32, 16]
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        deepest = seg.encoder.backbone(x)[-1]
        assert torch.equal(deepest, cls.eval().encoder(x)[3])
    assert seg(x).shape == (2, 1, 128, 128)
    n_stage5 = sum(p.numel() for p in cls.encoder.stages[4].parameters())
    full = common.backbone_unet(cls.config, full_res=8)
    assert common.count_params(full) - common.count_params(seg) > n_stage5
    again = common.build_model(seg.config)
    again.load_state_dict(seg.state_dict())
    assert "stages" not in full.config          # the committed models' configs do not change
    assert common.cost_kind(seg.config) == "bb_tuned_full_s4"
    with pytest.raises(ValueError, match="one width per classifier stage"):
        common.backbone_unet(cls.config, adapters=(32, 64, 96, 128, 192), stages=4)
    with pytest.raises(ValueError, match="stages must be"):
        common.backbone_unet(cls.config, stages=6)


def test_feature_dropout_drops_whole_classifier_channels_only_while_training():
    cls = common.Classifier(10)
    plain = common.load_backbone(common.backbone_unet(cls.config, full_res=8), cls)
    drop = common.backbone_unet(cls.config, full_res=8, feature_dropout=0.5)
    drop.load_state_dict(plain.state_dict())          # no weights of its own: a variant A loads into it
    assert "feature_dropout" not in plain.config and drop.config["feature_dropout"] == 0.5
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(plain.eval()(x), drop.eval()(x))
        torch.manual_seed(0)
        feats, ref = drop.train().encoder(x), plain.train().encoder(x)
    assert torch.equal(feats[0], ref[0])                # the full-resolution block is not dropped
    per_channel = feats[3].flatten(2).abs().amax(-1)    # an adapted classifier stage: whole channels are zero
    assert ((per_channel == 0) & (ref[3].flatten(2).abs().amax(-1) > 0)).float().mean() > 0.3
    assert common.build_model(drop.config).encoder.drop.p == 0.5


def test_load_branch_starts_the_branch_from_the_base_unets_upper_levels():
    cls = common.Classifier(10)
    base = common.unet(widths=(8, 12, 16, 24, 32), decoder=(24, 16, 12, 8)).eval()
    seg = common.load_branch(common.load_backbone(common.backbone_unet(cls.config, full_res=(8, 12, 16)), cls),
                             base).eval()
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        feats, levels = seg.encoder(x), base.encoder(x)
        assert torch.equal(feats[0], levels[0])                     # stride 1: the U-Net's first level itself
        for f, lv in zip(feats[1:3], levels[1:3]):                   # strides 2, 4: the adapted stage, then the level
            assert torch.equal(f[:, -lv.shape[1]:], lv)
    assert torch.equal(seg.encoder.backbone.stages[0][0][0].weight, cls.encoder.stages[0][0][0].weight)
    with pytest.raises(common.CheckpointError, match="do not fit"):
        common.load_branch(common.backbone_unet(cls.config, full_res=(8, 16, 16)), base)
    with pytest.raises(common.CheckpointError, match="no high-resolution branch"):
        common.load_branch(common.backbone_unet(cls.config), base)
