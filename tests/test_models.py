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


def test_unet_shape_and_levels():
    m = common.unet().eval()
    assert m(torch.randn(2, 3, 128, 128)).shape == (2, 1, 128, 128)
    assert m.encoder.strides == [1, 2, 4, 8, 16]          # 4 levels down, 4 up
    assert len(m.decoder.blocks) == 4
    assert m.encoder.out_channels[0] in (32, 64)


def test_backbone_unet_is_the_classifiers_stages_adapters_and_the_unet_decoder():
    """Part 3 as the course asks it: the classifier's stages without the head, a 1x1 adapter per stage, the same
    decoder class as the base U-Net, nothing else."""
    cls = common.Classifier(10)
    seg = common.load_backbone(common.backbone_unet(cls.config), cls).eval()
    assert type(seg.encoder) is common.AdaptedEncoder and seg.config["branch"] == []
    assert type(seg.decoder) is type(common.unet().decoder)
    assert seg.encoder.strides == [2, 4, 8, 16, 32] and seg.encoder.out_channels == [32, 64, 96, 128, 192]
    assert all(a[0].kernel_size == (1, 1) for a in seg.encoder.adapters)
    assert {n.split(".")[0] for n, _ in seg.named_parameters()} == {"encoder", "decoder"}
    assert {n.split(".")[0] for n, _ in seg.encoder.named_parameters()} == {"backbone", "adapters"}
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
    seg.freeze_encoder(False).train()
    assert seg.encoder.backbone.training
    assert common.count_params(seg, trainable_only=True) == common.count_params(seg)


def test_build_model_from_config():
    cls = common.Classifier(7)
    for m in (cls, common.unet(), common.backbone_unet(cls.config), common.backbone_unet(cls.config, branch=(8,))):
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


def test_backbone_unet_full_resolution_level():
    """branch=(w,): the plain U-Net's first level on the input, one more skip at stride 1, so the logits are at
    128x128; it trains while the classifier's stages are frozen."""
    cls = common.Classifier(10)
    seg = common.load_backbone(common.backbone_unet(cls.config, branch=(8,)), cls).eval()
    assert type(seg.encoder) is common.BranchedEncoder
    assert seg.encoder.strides == [1, 2, 4, 8, 16, 32] and seg.encoder.out_channels == [8, 32, 64, 96, 128, 192]
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        feats = seg.encoder(x)
        assert [f.shape[-1] for f in feats] == [128, 64, 32, 16, 8, 4]
        hr = common.UNetEncoder((8, 12)).eval()        # the level is the plain U-Net's first
        hr.stages[0].load_state_dict(seg.encoder.full.state_dict())
        assert torch.allclose(feats[0], hr(x)[0])
        assert torch.allclose(feats[1], seg.encoder.adapters[0](cls.eval().encoder.stages[0](x)), atol=1e-6)
    assert seg(x).shape == (2, 1, 128, 128) and seg.decoder.blocks[-1][0][0].in_channels == 32 + 8
    seg.freeze_encoder()
    assert all(p.requires_grad for p in seg.encoder.full.parameters())
    assert not any(p.requires_grad for p in seg.encoder.backbone.parameters())
    with pytest.raises(ValueError, match="one width"):
        common.backbone_unet(cls.config, branch=(8, 12))


@pytest.mark.parametrize("make", [lambda: common.Classifier(7), common.unet])
def test_the_stage_table_accounts_for_every_parameter_and_ends_at_the_output(make):
    """The report's per-stage architecture table is measured on the model: its parameters add up to the model's, and
    its last stage has the output's shape (7 classes, or a 128x128 logit map)."""
    model = make()
    table = common.stage_table(model)
    assert sum(int(p.replace(",", "")) for p in table["параметров"]) == common.count_params(model)
    assert table["выход"].iloc[-1] == ("7" if isinstance(model, common.Classifier) else "128×128")
    assert model.training                               # the forward pass left the mode as it was
