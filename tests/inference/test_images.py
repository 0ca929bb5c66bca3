"""repnext_mm/inference/images.py: the images of a file or folder, the output folder checked
before any work, and outputs published file by file."""
from __future__ import annotations

import re

import pytest

from repnext_mm.inference import images
from repnext_mm.utils.errors import InputError


#: The first bytes of a PNG: what the input check reads of each image.
PNG_HEAD = b'\x89PNG\r\n\x1a\n' + b'\x00' * 24


def _touch(path, data=PNG_HEAD):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_a_folder_gives_its_images_in_name_order(tmp_path):
    for name in ('b.JPG', 'a.png', '.hidden.png', 'notes.txt', 'sub/c.png'):
        _touch(tmp_path / name)
    assert images.collect_images(tmp_path) == [tmp_path / 'a.png', tmp_path / 'b.JPG']
    assert images.collect_images(tmp_path / 'a.png') == [tmp_path / 'a.png']


@pytest.mark.parametrize('layout, inputs, match', [
    ({}, 'missing.png', 'missing.png does not exist'),
    ({'config.py': b''}, 'config.py', r'config.py is not an image \(.png, .jpg.*INPUTS MODEL'),
    ({'notes.txt': b''}, '.', r'holds no images \(.png.*; pass an image'),
    ({'class/a.png': b''}, '.', 'only in its subfolders, which are not read: pass a subfolder'),
])
def test_inputs_without_images_are_refused(tmp_path, layout, inputs, match):
    for name, data in layout.items():
        _touch(tmp_path / name, data)
    with pytest.raises(InputError, match=match):
        images.collect_images(tmp_path / inputs)


def test_images_that_share_a_name_are_refused(tmp_path):
    for name in ('cat.jpg', 'cat.png', 'dog.png'):
        _touch(tmp_path / name)
    with pytest.raises(InputError, match=r'cat.jpg and .*cat.png share the name .cat.*overwrite'):
        images.collect_images(tmp_path)


def test_the_output_folder_may_exist_but_not_be_a_file(tmp_path):
    assert images.check_out_dir(tmp_path / 'new' / 'out') == tmp_path / 'new' / 'out'
    assert images.check_out_dir(tmp_path) == tmp_path
    _touch(tmp_path / 'file')
    with pytest.raises(InputError, match='file is a file; pass a folder.*Nothing was written'):
        images.check_out_dir(tmp_path / 'file')
    with pytest.raises(InputError, match='is inside .*file, which is a file'):
        images.check_out_dir(tmp_path / 'file' / 'out')
    assert not (tmp_path / 'new').exists()  # checking creates nothing


def test_publish_moves_every_file_and_keeps_the_others(tmp_path):
    staging, out = tmp_path / 'staging', tmp_path / 'out'
    _touch(staging / 'vis' / 'a.png', b'new')
    _touch(staging / 'preds' / 'a.json', b'{}')
    _touch(out / 'vis' / 'a.png', b'old')
    _touch(out / 'mine.txt', b'keep')
    written = images.publish(staging, out)
    assert written == [out / 'preds' / 'a.json', out / 'vis' / 'a.png']
    assert (out / 'vis' / 'a.png').read_bytes() == b'new'
    assert (out / 'mine.txt').read_bytes() == b'keep'
    assert sorted(p.name for p in (out / 'vis').iterdir()) == ['a.png']  # no temporary left


@pytest.mark.parametrize('data, problem', [
    (b'', 'is empty (0 bytes)'),
    (b'a text file renamed to look like an image', 'is not an image: it starts with'),
])
def test_an_image_that_cannot_be_read_is_refused_before_any_work(tmp_path, data, problem):
    _touch(tmp_path / 'a.png')
    bad = _touch(tmp_path / 'b.jpg', data)
    for inputs in (bad, tmp_path):
        with pytest.raises(InputError, match=re.escape(f'input image {bad} {problem}')
                           + '.*Nothing was written'):
            images.collect_images(inputs)
