"""Video datasets: moving cluttered Fashion-MNIST and clips from disk (issue 4 §3)."""
import json
import os

import numpy as np
import pytest
import torch

import dartok  # noqa: F401
from dartok.data import DEFAULT_FASHION_MNIST_ROOT
from dartok.video_data import (
    MovingClutteredFashionMNIST,
    VideoFolderDataset,
    create_video_dataset,
    read_annotations,
    segment_indices,
)

needs_fmnist = pytest.mark.skipif(
    not os.path.isfile(os.path.join(DEFAULT_FASHION_MNIST_ROOT, "t10k-images-idx3-ubyte.gz")),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)


# --------------------------------------------------------------------------- moving Fashion-MNIST


@needs_fmnist
def test_moving_fmnist_shapes_determinism_and_labels():
    ds = MovingClutteredFashionMNIST("test", num_samples=40, num_frames=6, canvas_size=48, seed=3)
    clip, label = ds[5]
    assert clip.shape == (1, 6, 48, 48) and clip.dtype == torch.float32
    assert 0.0 <= float(clip.min()) and float(clip.max()) <= 1.0 and float(clip.max()) > 0.5
    assert ds.classes == ["right", "left", "down", "up"] and label == int(ds.targets[5])
    again = MovingClutteredFashionMNIST("test", num_samples=40, num_frames=6, canvas_size=48, seed=3)
    for i in (5, 0, 39):  # any access order, fresh object: same clip
        assert torch.equal(again[i][0], ds[i][0])
    more = MovingClutteredFashionMNIST("test", num_samples=200, num_frames=6, canvas_size=48, seed=3)
    assert np.array_equal(more.targets[:40], ds.targets) and torch.equal(more[7][0], ds[7][0])
    other = MovingClutteredFashionMNIST("test", num_samples=40, num_frames=6, canvas_size=48, seed=4)
    assert not torch.equal(other[5][0], clip)
    assert set(np.unique(more.targets)) == {0, 1, 2, 3}  # all directions occur
    rgb = MovingClutteredFashionMNIST("test", num_samples=4, channels=3, normalize=True)[1][0]
    assert rgb.shape == (3, 8, 64, 64) and float(rgb.min()) == -1.0
    assert torch.equal(rgb[0], rgb[2])


@needs_fmnist
def test_direction_label_is_the_motion_and_no_single_frame_shows_it():
    ds = MovingClutteredFashionMNIST("test", num_samples=30, num_frames=5, canvas_size=48, seed=1)
    S = ds.canvas_size
    for i in range(10):
        boxes = ds.object_boxes(i)[:, 0]  # T×4
        step = (boxes[1, :2] - boxes[0, :2]) * S
        step = (step + S / 2) % S - S / 2  # undo the torus wrap
        name = ds.classes[int(ds.targets[i])]
        dx, dy = {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1)}[name]
        assert np.sign(step).tolist() == [dx, dy]
        assert ds.speed[0] <= np.abs(step).max() <= ds.speed[1]
        # the same clip with every other label: frame 0 identical (it cannot tell the label), frames 1.. differ
        clips = [ds.render(i, label=k) for k in range(4)]
        for k in range(4):
            np.testing.assert_array_equal(clips[k][0], clips[0][0])
            if k != int(ds.targets[i]):
                assert not np.array_equal(clips[k][1:], clips[int(ds.targets[i])][1:])
        np.testing.assert_array_equal(clips[int(ds.targets[i])], ds.render(i))
    # the item's start position is uniform on the torus for every label: positions are no cue
    starts = np.array([ds.object_boxes(i)[0, 0, :2] for i in range(30)])
    assert starts.min() >= 0 and starts.max() < 1
    with pytest.raises(ValueError, match="label"):
        ds.render(0, label=4)


@needs_fmnist
def test_which_moves_only_the_labelled_item_moves():
    ds = MovingClutteredFashionMNIST("test", num_samples=12, task="which_moves", num_frames=4, canvas_size=48,
                                     num_clutter=3, seed=2)
    assert len(ds.classes) == 10
    S = ds.canvas_size
    for i in range(6):
        clip = ds.render(i)
        boxes = ds.object_boxes(i)  # T×2×4: moving, static
        np.testing.assert_array_equal(boxes[:, 1], boxes[:1, 1].repeat(4, 0))  # static item stays
        assert not np.array_equal(boxes[0, 0], boxes[1, 0])
        # every changed pixel lies under the moving item in one of the two frames (torus coordinates)
        changed = np.argwhere(clip[1] != clip[0])
        assert len(changed)
        for y, x in changed:
            inside = False
            for t in (0, 1):
                x0, y0, x1, y1 = boxes[t, 0] * S
                inside |= ((x - x0) % S < x1 - x0) and ((y - y0) % S < y1 - y0)
            assert inside
        # rendering with the static item's class as label makes that item move instead; frame 0 unchanged
        items = ds._plan(i)["items"]
        _, split_labels = ds._arrays()
        other = int(split_labels[items[1]["item"]])
        assert other != ds.targets[i]
        swapped = ds.render(i, label=other)
        np.testing.assert_array_equal(swapped[0], clip[0])
        assert not np.array_equal(swapped[1:], clip[1:])
        with pytest.raises(ValueError, match="one of them"):
            ds.render(i, label=next(k for k in range(10) if k not in (other, int(ds.targets[i]))))


@needs_fmnist
def test_moving_fmnist_bad_arguments():
    with pytest.raises(ValueError, match="task"):
        MovingClutteredFashionMNIST("test", num_samples=2, task="colour")
    with pytest.raises(ValueError, match="num_frames"):
        MovingClutteredFashionMNIST("test", num_samples=2, num_frames=1)
    with pytest.raises(ValueError, match="speed"):
        MovingClutteredFashionMNIST("test", num_samples=2, speed=(3, 1))
    with pytest.raises(ValueError, match="num_directions"):
        MovingClutteredFashionMNIST("test", num_samples=2, num_directions=5)
    with pytest.raises(ValueError, match="too small"):
        MovingClutteredFashionMNIST("test", num_samples=2, canvas_size=16)
    with pytest.raises(ValueError, match="split"):
        MovingClutteredFashionMNIST("val", num_samples=2)
    with pytest.raises(IndexError):
        MovingClutteredFashionMNIST("test", num_samples=2)[2]
    ds = MovingClutteredFashionMNIST("test", num_samples=3, num_directions=8)
    assert len(ds.classes) == 8 and ds[2][1] in range(8)


# --------------------------------------------------------------------------- clips on disk


def test_segment_indices_like_videomamba():
    # L = 33, T = 8: segments of 4 frames [0,4], [4,8], ...; eval takes start + 2
    assert segment_indices(33, 8, train=False) == [2, 6, 10, 14, 18, 22, 26, 30]
    g = torch.Generator().manual_seed(0)
    draws = [segment_indices(33, 8, train=True, generator=g) for _ in range(20)]
    for idx in draws:
        assert all(4 * i <= k <= 4 * (i + 1) for i, k in enumerate(idx))
    assert len({tuple(d) for d in draws}) > 1
    g2 = torch.Generator().manual_seed(0)
    assert segment_indices(33, 8, True, generator=g2) == draws[0]
    assert segment_indices(3, 8, train=False) == [0, 0, 0, 1, 1, 1, 2, 2]  # short video repeats frames
    assert segment_indices(1, 4, train=True) == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="num_video_frames"):
        segment_indices(0, 8, False)


def write_video(path, num_frames, size=(32, 48), codec="mpeg4"):
    """Frame k is a flat gray of level 20·k (readable back through a lossy codec)."""
    import av

    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec, rate=10)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        if codec == "mpeg4":
            stream.options = {"qscale": "1"}
        for k in range(num_frames):
            img = np.full((*size, 3), 20 * k, dtype=np.uint8)
            img[:, :4, 0] = 255  # a red stripe: RGB is really RGB
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def write_frames(folder, num_frames, size=(16, 16)):
    from PIL import Image

    folder.mkdir(parents=True)
    for k in range(num_frames):
        Image.fromarray(np.full(size, 10 * k, dtype=np.uint8)).save(folder / f"img_{k:05d}.png")


def frame_levels(clip, step):
    return [round(float(v) * 255 / step) for v in clip[:, :, :, 8:].mean((0, 2, 3))]


def test_video_folder_reads_videos_and_frame_folders(tmp_path):
    write_video(tmp_path / "a.mp4", 12)
    write_video(tmp_path / "b.avi", 9)
    write_frames(tmp_path / "frames" / "c", 20)
    (tmp_path / "train.csv").write_text("path,label\na.mp4,1\nb.avi,0\nframes/c,2\n")
    ds = VideoFolderDataset(tmp_path, "train.csv", num_frames=4, train=False)
    assert len(ds) == 3 and ds.classes == ["0", "1", "2"] and ds.targets.tolist() == [1, 0, 2]
    clip, label = ds[0]
    assert clip.shape == (3, 4, 32, 48) and label == 1 and clip.dtype == torch.float32
    assert frame_levels(clip, 20) == [k for k in segment_indices(12, 4, False)]  # [1, 4, 7, 9]-style middles
    assert float(clip[0, :, :, :3].mean()) > 0.9 > float(clip[1, :, :, :3].mean()) + 0.3  # the red stripe stays red
    assert frame_levels(ds[1][0], 20) == segment_indices(9, 4, False)
    frames, _ = ds[2]
    assert frames.shape == (3, 4, 16, 16)
    assert frame_levels(frames, 10) == segment_indices(20, 4, False)
    gray = VideoFolderDataset(tmp_path, tmp_path / "train.csv", num_frames=3, channels=1, frame_size=8)
    assert gray[0][0].shape == (1, 3, 8, 8) and gray[2][0].shape == (1, 3, 8, 8)
    # training sampling: random within the segments, reproducible under torch's seed
    tr = VideoFolderDataset(tmp_path, "train.csv", num_frames=4, train=True, transform=lambda c: c * 2)
    torch.manual_seed(0)
    a = tr[2][0]
    torch.manual_seed(0)
    assert torch.equal(tr[2][0], a) and float(a.max()) <= 2.0
    levels = [round(float(v) * 255 / 20) for v in a[:, :, :, 8:].mean((0, 2, 3))]
    seg = 19 / 4  # 20 frames, 4 segments
    assert all(round(seg * i) <= k <= round(seg * (i + 1)) for i, k in enumerate(levels))


def test_annotation_formats(tmp_path):
    (tmp_path / "ws.txt").write_text("# VideoMamba list\nx/1.webm 3\n\nx/2.webm 0\n")
    paths, labels, names = read_annotations(tmp_path / "ws.txt")
    assert paths == ["x/1.webm", "x/2.webm"] and labels == [3, 0] and names == ["0", "1", "2", "3"]
    (tmp_path / "raw.txt").write_text("f/1 48 2\nf/2 30 1\n")  # VideoMAE rawframes: path total_frames label
    assert read_annotations(tmp_path / "raw.txt")[1] == [2, 1]
    (tmp_path / "names.csv").write_text("id,label,path\n7,Pushing something,v/1.mp4\n8,Dropping something,v/2.mp4\n")
    paths, labels, names = read_annotations(tmp_path / "names.csv")
    assert paths == ["v/1.mp4", "v/2.mp4"] and names == ["Dropping something", "Pushing something"]
    assert labels == [1, 0]
    (tmp_path / "labels.json").write_text(json.dumps({"Pushing something": "5", "Dropping something": "2"}))
    _, labels, names = read_annotations(tmp_path / "names.csv", classes=tmp_path / "labels.json")
    assert labels == [5, 2] and names[5] == "Pushing something" and len(names) == 6
    _, labels, _ = read_annotations(tmp_path / "names.csv", classes=["Dropping something", "Pushing something"])
    assert labels == [1, 0]
    for text, match in [("", "no clips"), ("a.mp4\n", "expected 'path,label'"), ("path,label\n", "header only"),
                        ("path,cls\na,1\n", "'path' and a 'label'"), ("a.mp4,-1\n", "outside"),
                        ("a.mp4,1\nb.mp4,jump\n", "mix")]:
        (tmp_path / "bad.csv").write_text(text)
        with pytest.raises(ValueError, match=match):
            read_annotations(tmp_path / "bad.csv")
    (tmp_path / "bad.csv").write_text("a.mp4,Jumping\n")
    with pytest.raises(ValueError, match="unknown class name"):
        read_annotations(tmp_path / "bad.csv", classes=["Pushing"])
    (tmp_path / "bad.csv").write_text("a.mp4,3\n")
    with pytest.raises(ValueError, match="outside"):
        read_annotations(tmp_path / "bad.csv", classes=["a", "b"])
    with pytest.raises(FileNotFoundError, match="annotation file"):
        read_annotations(tmp_path / "nope.csv")


def test_video_folder_errors(tmp_path):
    (tmp_path / "list.csv").write_text("missing.mp4,0\n")
    with pytest.raises(FileNotFoundError, match="do not exist"):
        VideoFolderDataset(tmp_path, "list.csv")
    ds = VideoFolderDataset(tmp_path, "list.csv", check_files=False)
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        ds[0]
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 10)
    (tmp_path / "empty").mkdir()
    (tmp_path / "list2.csv").write_text("junk.mp4,0\nempty,1\n")
    ds = VideoFolderDataset(tmp_path, "list2.csv")
    with pytest.raises(ValueError, match="cannot decode"):
        ds[0]
    with pytest.raises(ValueError, match="no images"):
        ds[1]
    with pytest.raises(IndexError):
        ds[2]
    with pytest.raises(ValueError, match="frame_size"):
        VideoFolderDataset(tmp_path, "list2.csv", frame_size=(0, 4))
    with pytest.raises(ValueError, match="channels"):
        VideoFolderDataset(tmp_path, "list2.csv", channels=2)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        VideoFolderDataset(tmp_path / "nowhere", "list.csv")


def test_create_video_dataset(tmp_path):
    write_frames(tmp_path / "c", 5)
    (tmp_path / "train.csv").write_text("c,1\n")
    (tmp_path / "val.txt").write_text("c 0\n")
    tr = create_video_dataset("video_folder", tmp_path, "train", num_frames=2, is_training=True, batch_size=None)
    ev = create_video_dataset("ssv2", tmp_path, "val", num_frames=2, channels=1)
    assert isinstance(tr, VideoFolderDataset) and tr.train and not ev.train
    assert ev[0][0].shape == (1, 2, 16, 16) and tr[0][1] == 1
    with pytest.raises(FileNotFoundError, match="annotation"):
        create_video_dataset("video_folder", tmp_path, "test")
    with pytest.raises(ValueError, match="root"):
        create_video_dataset("ssv2", None, "train")
    with pytest.raises(ValueError, match="unknown video dataset"):
        create_video_dataset("kinetics", tmp_path, "train")
    if os.path.isfile(os.path.join(DEFAULT_FASHION_MNIST_ROOT, "t10k-images-idx3-ubyte.gz")):
        ds = create_video_dataset("moving_fmnist", None, "validation", num_samples=3, task="which_moves")
        assert isinstance(ds, MovingClutteredFashionMNIST) and ds.split == "test" and ds[0][0].shape[1] == 8
        with pytest.raises(TypeError):
            create_video_dataset("moving_fmnist", None, "train", num_samples=3, colour=True)
