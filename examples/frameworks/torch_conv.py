"""A 2-D convolution + ReLU as a torch.autograd.Function with a hand-written backward (NCHW, as torch's own)."""

import torch
import torch.nn.functional as F


class Conv2dReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        kernel = weight.shape[2:]
        cols = F.unfold(x, kernel, padding=padding, stride=stride)  # (N, C_in·kh·kw, OH·OW)
        out_h = (x.shape[2] + 2 * padding - kernel[0]) // stride + 1
        out = (weight.flatten(1) @ cols + bias[:, None]).clamp(min=0)
        out = out.view(x.shape[0], weight.shape[0], out_h, -1)
        ctx.save_for_backward(weight, cols, out)
        ctx.conf = (x.shape[2:], stride, padding)
        return out

    @staticmethod
    def backward(ctx, grad):
        weight, cols, out = ctx.saved_tensors
        size, stride, padding = ctx.conf
        grad_z = (grad * (out > 0)).flatten(2)  # through the ReLU
        grad_w = (grad_z @ cols.transpose(1, 2)).sum(0).view_as(weight)
        grad_x = F.fold(weight.flatten(1).t() @ grad_z, size, weight.shape[2:], padding=padding, stride=stride)
        return grad_x, grad_w, grad_z.sum((0, 2)), None, None
