#include "core/tensor.h"

#include <cstring>

namespace troupe {

Shape::Shape(std::initializer_list<int64_t> dims) {
  TROUPE_CHECK(dims.size() <= size_t(kMaxDims), "rank %zu exceeds %d", dims.size(), kMaxDims);
  for (int64_t d : dims) d_[size_t(rank_++)] = d;
}
Shape::Shape(const std::vector<int64_t>& dims) {
  TROUPE_CHECK(dims.size() <= size_t(kMaxDims), "rank %zu exceeds %d", dims.size(), kMaxDims);
  for (int64_t d : dims) d_[size_t(rank_++)] = d;
}
int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank_; i++) n *= d_[size_t(i)];
  return n;
}
std::string Shape::str() const {
  std::string s = "(";
  for (int i = 0; i < rank_; i++) s += (i ? ", " : "") + std::to_string(d_[size_t(i)]);
  return s + ")";
}
bool Shape::operator==(const Shape& o) const {
  if (rank_ != o.rank_) return false;
  for (int i = 0; i < rank_; i++)
    if (d_[size_t(i)] != o.d_[size_t(i)]) return false;
  return true;
}

Storage::Storage(size_t bytes, Device dev) : bytes_(bytes), dev_(dev), alloc_(allocator_for(dev)) {
  ptr_ = alloc_->allocate(bytes);
}
Storage::Storage(void* external, size_t bytes, Device dev) : ptr_(external), bytes_(bytes), dev_(dev) {}
Storage::~Storage() {
  if (alloc_) alloc_->deallocate(ptr_, bytes_);
}

static void contiguous_strides(const Shape& s, std::array<int64_t, kMaxDims>& st) {
  int64_t acc = 1;
  for (int i = s.rank() - 1; i >= 0; i--) {
    st[size_t(i)] = acc;
    acc *= s[i];
  }
}

Tensor Tensor::empty(Shape shape, DType dtype, Device dev) {
  for (int i = 0; i < shape.rank(); i++) TROUPE_CHECK(shape[i] >= 0, "negative dim in %s", shape.str().c_str());
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  contiguous_strides(shape, t.strides_);
  t.storage_ = std::make_shared<Storage>(size_t(shape.numel()) * dtype_size(dtype), dev);
  return t;
}

Tensor Tensor::zeros(Shape shape, DType dtype, Device dev) {
  TROUPE_CHECK(dev.is_cpu(), "zeros on %s: use the backend's fill", dev.str().c_str());
  Tensor t = empty(shape, dtype, dev);
  std::memset(t.raw(), 0, t.nbytes());
  return t;
}

Tensor Tensor::from_external(void* data, Shape shape, DType dtype, Device dev) {
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  contiguous_strides(shape, t.strides_);
  t.storage_ = std::make_shared<Storage>(data, size_t(shape.numel()) * dtype_size(dtype), dev);
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& v, Shape shape) {
  TROUPE_CHECK(int64_t(v.size()) == shape.numel(), "%zu values for shape %s", v.size(), shape.str().c_str());
  Tensor t = empty(shape);
  std::memcpy(t.raw(), v.data(), v.size() * 4);
  return t;
}

void* Tensor::raw() const {
  TROUPE_CHECK(storage_ != nullptr, "undefined tensor");
  return static_cast<char*>(storage_->data()) + offset_ * int64_t(dtype_size(dtype_));
}

bool Tensor::is_contiguous() const {
  int64_t acc = 1;
  for (int i = rank() - 1; i >= 0; i--) {
    if (shape_[i] != 1 && strides_[size_t(i)] != acc) return false;
    acc *= shape_[i];
  }
  return true;
}

Tensor Tensor::view(Shape shape) const {
  TROUPE_CHECK(is_contiguous(), "view of a non-contiguous tensor %s", str().c_str());
  TROUPE_CHECK(shape.numel() == numel(), "view %s of %s changes the element count", shape.str().c_str(),
               shape_.str().c_str());
  Tensor t = *this;
  t.shape_ = shape;
  contiguous_strides(shape, t.strides_);
  return t;
}

Tensor Tensor::slice(int dim, int64_t start, int64_t end) const {
  if (dim < 0) dim += rank();
  TROUPE_CHECK(dim >= 0 && dim < rank(), "slice dim %d of rank %d", dim, rank());
  TROUPE_CHECK(0 <= start && start <= end && end <= shape_[dim], "slice [%ld, %ld) of dim %d size %ld",
               long(start), long(end), dim, long(shape_[dim]));
  Tensor t = *this;
  t.offset_ += start * strides_[size_t(dim)];
  t.shape_[dim] = end - start;
  return t;
}

Tensor Tensor::squeeze0() const {
  Tensor t = *this;
  std::vector<int64_t> d = shape_.vec();
  d.erase(d.begin());
  t.shape_ = Shape(d);
  for (int i = 0; i + 1 < kMaxDims; i++) t.strides_[size_t(i)] = strides_[size_t(i + 1)];
  return t;
}

Tensor Tensor::transpose(int d0, int d1) const {
  if (d0 < 0) d0 += rank();
  if (d1 < 0) d1 += rank();
  TROUPE_CHECK(d0 >= 0 && d0 < rank() && d1 >= 0 && d1 < rank(), "transpose(%d, %d) of rank %d", d0, d1, rank());
  Tensor t = *this;
  std::swap(t.shape_[d0], t.shape_[d1]);
  std::swap(t.strides_[size_t(d0)], t.strides_[size_t(d1)]);
  return t;
}

// Copies a strided CPU view element by element into dense memory.
static void gather_strided(char* dst, const char* src, const Shape& shape,
                           const std::array<int64_t, kMaxDims>& strides, size_t esize) {
  int r = shape.rank();
  int64_t n = shape.numel();
  std::array<int64_t, kMaxDims> idx{};
  for (int64_t k = 0; k < n; k++) {
    int64_t off = 0;
    for (int i = 0; i < r; i++) off += idx[size_t(i)] * strides[size_t(i)];
    std::memcpy(dst + k * int64_t(esize), src + off * int64_t(esize), esize);
    for (int i = r - 1; i >= 0; i--) {
      if (++idx[size_t(i)] < shape[i]) break;
      idx[size_t(i)] = 0;
    }
  }
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  TROUPE_CHECK(device().is_cpu(), "clone on %s is the backend's job", device().str().c_str());
  Tensor t = empty(shape_, dtype_, device());
  if (is_contiguous()) {
    std::memcpy(t.raw(), raw(), nbytes());
  } else {
    gather_strided(static_cast<char*>(t.raw()),
                   static_cast<const char*>(storage_->data()) + offset_ * int64_t(dtype_size(dtype_)), shape_,
                   strides_, dtype_size(dtype_));
  }
  return t;
}

void Tensor::copy_from(const Tensor& src) {
  TROUPE_CHECK(src.shape() == shape_ && src.dtype() == dtype_, "copy_from %s into %s", src.str().c_str(),
               str().c_str());
  TROUPE_CHECK(is_contiguous() && device().is_cpu() && src.device().is_cpu(), "copy_from needs dense CPU target");
  Tensor s = src.contiguous();
  std::memcpy(raw(), s.raw(), nbytes());
}

std::vector<float> Tensor::to_vector() const {
  Tensor s = contiguous();
  std::vector<float> out(static_cast<size_t>(numel()));
  switch (dtype_) {
    case DType::F32: std::memcpy(out.data(), s.raw(), out.size() * 4); break;
    case DType::BF16:
      for (size_t i = 0; i < out.size(); i++) out[i] = bf16_to_f32(s.data<uint16_t>()[i]);
      break;
    case DType::F16:
      for (size_t i = 0; i < out.size(); i++) out[i] = f16_to_f32(s.data<uint16_t>()[i]);
      break;
    case DType::I32:
      for (size_t i = 0; i < out.size(); i++) out[i] = float(s.data<int32_t>()[i]);
      break;
    case DType::I64:
      for (size_t i = 0; i < out.size(); i++) out[i] = float(s.data<int64_t>()[i]);
      break;
  }
  return out;
}

Tensor Tensor::to(DType dtype) const {
  TROUPE_CHECK(device().is_cpu(), "to(dtype) on %s", device().str().c_str());
  if (dtype == dtype_) return clone();
  std::vector<float> v = to_vector();
  Tensor t = empty(shape_, dtype);
  for (size_t i = 0; i < v.size(); i++) {
    switch (dtype) {
      case DType::F32: t.data<float>()[i] = v[i]; break;
      case DType::BF16: t.data<uint16_t>()[i] = f32_to_bf16(v[i]); break;
      case DType::F16: t.data<uint16_t>()[i] = f32_to_f16(v[i]); break;
      case DType::I32: t.data<int32_t>()[i] = int32_t(v[i]); break;
      case DType::I64: t.data<int64_t>()[i] = int64_t(v[i]); break;
    }
  }
  return t;
}

void Tensor::fill(float value) {
  TROUPE_CHECK(is_contiguous() && device().is_cpu(), "fill needs a dense CPU tensor");
  int64_t n = numel();
  switch (dtype_) {
    case DType::F32: for (int64_t i = 0; i < n; i++) data<float>()[i] = value; break;
    case DType::BF16: for (int64_t i = 0; i < n; i++) data<uint16_t>()[i] = f32_to_bf16(value); break;
    case DType::F16: for (int64_t i = 0; i < n; i++) data<uint16_t>()[i] = f32_to_f16(value); break;
    case DType::I32: for (int64_t i = 0; i < n; i++) data<int32_t>()[i] = int32_t(value); break;
    case DType::I64: for (int64_t i = 0; i < n; i++) data<int64_t>()[i] = int64_t(value); break;
  }
}

std::string Tensor::str() const {
  return "Tensor(" + std::string(dtype_name(dtype_)) + ", " + shape_.str() + ", " + device().str() + ")";
}

}  // namespace troupe
