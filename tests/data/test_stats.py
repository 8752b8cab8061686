"""Dataset statistics and the columnar COCO reader."""

from __future__ import annotations

import json

import numpy as np
import pytest
from coco_test_files import box, image, write_coco

from workbench.data.columnar import SEG_POLYGON, load_coco_table
from workbench.data.stats import class_table, coco_statistics
from workbench.errors import DatasetError


def test_box_size_buckets_follow_coco_areas(tmp_path):
    path = write_coco(tmp_path, images=[image(1, width=1000, height=1000)], annotations=[
        box(1, 1, [0, 0, 31, 31]),  # 961 < 32², small
        box(2, 1, [0, 0, 32, 32]),  # 1024 = 32², medium
        box(3, 1, [0, 0, 95, 95]),  # medium
        box(4, 1, [0, 0, 96, 96]),  # 9216 = 96², large
        box(5, 1, [0, 0, 200, 10], area=100),  # area field wins over the box: small
    ])
    stats = coco_statistics(load_coco_table(path))

    assert stats["box_size_buckets"] == {"small": 2, "medium": 2, "large": 1}


def test_counts_per_class_and_image(tmp_path):
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    path = write_coco(tmp_path, images=[image(1), image(2), image(3, width=320, height=240)], categories=categories,
                      annotations=[box(1, 1, [0, 0, 10, 10]), box(2, 1, [0, 0, 10, 10]),
                                   box(3, 2, [0, 0, 10, 10], category_id=2)])
    stats = coco_statistics(load_coco_table(path))

    assert stats["classes"][0] == {"id": 1, "name": "cat", "annotations": 2, "images": 1, "isthing": True}
    assert stats["classes"][1]["images"] == 1
    assert stats["objects_per_image"]["counts"] == [1, 1, 1]
    assert stats["num_empty_images"] == 1
    assert stats["image_sizes"] == {"width": [320, 640], "height": [240, 480], "count": [1, 2]}
    assert class_table({"train": stats, "val": stats})[0] == {
        "class": "cat", "train annotations": 2, "train images": 1, "val annotations": 2, "val images": 1}


def test_box_centre_heatmap_is_normalised(tmp_path):
    path = write_coco(tmp_path, images=[image(1, width=100, height=200)], annotations=[
        box(1, 1, [0, 0, 4, 8]),  # centre (0.02, 0.02): top-left cell
        box(2, 1, [96, 192, 4, 8]),  # centre (0.98, 0.98): bottom-right cell
    ])
    heatmap = np.array(coco_statistics(load_coco_table(path))["box_center_heatmap"]["counts"])

    assert heatmap.sum() == 2
    assert heatmap[0, 0] == 1
    assert heatmap[-1, -1] == 1


def test_polygon_area_matches_pycocotools(shared_data):
    from pycocotools.coco import COCO

    path = shared_data / "coco_real/mmpose_coco_person/annotations/test_coco.json"
    table = load_coco_table(path)
    coco = COCO(str(path))
    polygons = table.seg_kind == SEG_POLYGON

    rasterised = np.array([coco.annToMask(coco.anns[int(i)]).sum() for i in table.ann_ids[polygons]])
    # Shoelace and rasterised areas differ by the boundary pixels only.
    assert np.allclose(table.shape_areas[polygons], rasterised, rtol=0.1)
    assert table.min_polygon_points[polygons].min() >= 3


def test_mask_coverage_of_polygons(tmp_path):
    path = write_coco(tmp_path, images=[image(1, width=100, height=100)], annotations=[
        box(1, 1, [0, 0, 50, 50], segmentation=[[0, 0, 50, 0, 50, 50, 0, 50]])])
    coverage = coco_statistics(load_coco_table(path))["mask_coverage"]

    assert coverage["mean"] == 0.25


@pytest.mark.parametrize("content, message", [
    ("[]", "a bare list of annotations is not a COCO file"),  # annotations only
    ('{"annotations": []}', "has no 'images' list"),  # no images
    ('{"images": [', "is not valid JSON"),  # cut off
])
def test_bad_file_raises_dataset_error(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)

    with pytest.raises(DatasetError, match=message):
        load_coco_table(path)


def test_malformed_entries_are_listed(tmp_path):
    path = tmp_path / "odd.json"
    path.write_text(json.dumps({"images": [image(1), {"id": "x"}], "annotations": [
        {"id": 1, "image_id": 1, "category_id": "one", "bbox": [0, 0, 1, 1]}], "categories": [{"id": 1, "name": "a"}]}))
    table = load_coco_table(path)

    assert table.num_images == 1
    assert "images[1]" in table.malformed[0]
    assert table.category_ids.tolist() == [-1]


@pytest.mark.parametrize("dump", [
    lambda doc: json.dumps(doc, separators=(",", ":")),  # compact: polygons parsed from the text
    lambda doc: json.dumps(doc),  # spaces after separators: still the text path
    lambda doc: json.dumps(doc, indent=2),  # pretty-printed: parsed as JSON lists
])
def test_polygon_columns_same_for_any_layout(tmp_path, dump):
    annotations = [
        box(1, 1, [0, 0, 10, 10], segmentation=[[0, 0, 10, 0, 10, 10, 0, 10]]),  # area 100
        box(2, 1, [0, 0, 4, 4], segmentation=[[0, 0, 4, 0, 4, 4], [0, 0, 1e1, 0, 0, 2.5]]),  # 8 + 12.5
        box(3, 1, [0, 0, 4, 4], segmentation=[[0, 0, 4, 0]]),  # two points
        box(4, 1, [0, 0, 4, 4], segmentation={"size": [480, 640], "counts": [0, 16, 307184]}),
    ]
    path = tmp_path / "layout.json"
    path.write_text(dump({"images": [image(1)], "annotations": annotations, "categories": [{"id": 1, "name": "a"}]}))
    table = load_coco_table(path)

    assert table.shape_areas.tolist() == [100.0, 20.5, 0.0, 16.0]
    assert table.min_polygon_points.tolist() == [4, 3, 2, 0]


def test_empty_polygon_part_falls_back(tmp_path):
    path = tmp_path / "empty_part.json"
    path.write_text('{"images":[{"id":1,"file_name":"a.jpg","width":9,"height":9}],"categories":[{"id":1,"name":"a"}],'
                    '"annotations":[{"id":1,"image_id":1,"category_id":1,"bbox":[0,0,2,2],"area":2,'
                    '"segmentation":[[0,0,2,0,2,2],[]]}]}')
    table = load_coco_table(path)

    assert table.shape_areas.tolist() == [2.0]
    assert table.min_polygon_points.tolist() == [0]


@pytest.mark.parametrize("numbers", [
    ["12.5", "-3", "0.25", "640", "-0.0", "7.125", "0", "99.99"],  # plain decimals: read byte-wise
    ["123456789012345", "1.00000000000001", "-0.00000000000001", "12345678.9", "3", "4"],  # 15 digits, 8+ digits
    ["1e2", "2.5E-1", "3", "4", "5", "6"],  # exponents: numpy's parser
    ["1.2345678901234567", "2.000000000000000001", "3", "4", "5", "6"],  # more than 15 digits: numpy's parser
])
def test_polygon_numbers_read_exactly(tmp_path, numbers):
    polygons = [[f"[{','.join(numbers[i:] + numbers[:i])}]" for i in range(3)], [f"[{', '.join(numbers)}]"]]
    annotations = ",".join(
        f'{{"id":{index + 1},"image_id":1,"category_id":1,"bbox":[0,0,9,9],"area":81,'
        f'"segmentation":[{",".join(parts)}]}}'
        for index, parts in enumerate(polygons))
    text = ('{"images":[{"id":1,"file_name":"a.jpg","width":640,"height":480}],'
            f'"categories":[{{"id":1,"name":"a"}}],"annotations":[{annotations}]}}')
    (tmp_path / "compact.json").write_text(text)
    # Pretty-printed, the polygons are parsed as JSON lists: the reference.
    (tmp_path / "pretty.json").write_text(json.dumps(json.loads(text), indent=2))
    table, reference = load_coco_table(tmp_path / "compact.json"), load_coco_table(tmp_path / "pretty.json")

    # Every number must equal the float JSON gives it, bit for bit, so the areas match exactly.
    assert table.shape_areas.tobytes() == reference.shape_areas.tobytes()
    assert table.min_polygon_points.tolist() == reference.min_polygon_points.tolist()
