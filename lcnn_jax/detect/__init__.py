"""Lightweight detectors: SSD/SSDLite on MobileNets and YOLOv8, their losses, NMS and COCO evaluation."""
