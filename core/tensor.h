#pragma once
// Tensor: a typed, shaped view onto reference-counted storage on one device.
// Views (reshape, slice, transpose) share storage; contiguous() copies only when the
// view is not already dense. Kernels in ops/ take raw pointers from data<T>().

#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"

namespace troupe {

constexpr int kMaxDims = 8;

class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  explicit Shape(const std::vector<int64_t>& dims);
  int rank() const { return rank_; }
  int64_t operator[](int i) const { return d_[size_t(i < 0 ? i + rank_ : i)]; }
  int64_t& operator[](int i) { return d_[size_t(i < 0 ? i + rank_ : i)]; }
  int64_t numel() const;
  std::vector<int64_t> vec() const { return {d_.begin(), d_.begin() + rank_}; }
  std::string str() const;  // "(2, 3, 4)"
  bool operator==(const Shape& o) const;

 private:
  std::array<int64_t, kMaxDims> d_{};
  int rank_ = 0;
};

// Owns bytes on a device; freed through the allocator that made it.
class Storage {
 public:
  Storage(size_t bytes, Device dev);
  // Wraps memory owned elsewhere (a mapped file, a caller's buffer); never freed here.
  Storage(void* external, size_t bytes, Device dev);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return dev_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  Device dev_;
  Allocator* alloc_ = nullptr;  // null for external memory
};

class Tensor {
 public:
  Tensor() = default;
  static Tensor empty(Shape shape, DType dtype = DType::F32, Device dev = Device::cpu());
  static Tensor zeros(Shape shape, DType dtype = DType::F32, Device dev = Device::cpu());
  static Tensor from_external(void* data, Shape shape, DType dtype, Device dev = Device::cpu());
  static Tensor from_vector(const std::vector<float>& v, Shape shape);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int64_t size(int dim) const { return shape_[dim]; }
  int rank() const { return shape_.rank(); }
  int64_t numel() const { return shape_.numel(); }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::cpu(); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }
  const std::array<int64_t, kMaxDims>& strides() const { return strides_; }
  bool is_contiguous() const;
  long use_count() const { return storage_.use_count(); }

  void* raw() const;
  template <class T>
  T* data() const {
    return static_cast<T*>(raw());
  }

  // Views (share storage).
  Tensor view(Shape shape) const;                           // needs contiguous
  Tensor slice(int dim, int64_t start, int64_t end) const;  // [start, end) along dim
  Tensor transpose(int d0, int d1) const;
  Tensor operator[](int64_t i) const { return slice(0, i, i + 1).squeeze0(); }

  // Copies.
  Tensor contiguous() const;
  Tensor clone() const;
  Tensor to(DType dtype) const;  // CPU only: f32 <-> bf16/f16 conversion
  void copy_from(const Tensor& src);
  void fill(float value);  // CPU, floating dtypes
  std::vector<float> to_vector() const;  // CPU, any floating dtype, as f32

  std::string str() const;  // "Tensor(f32, (2, 3), cpu)"

 private:
  Tensor squeeze0() const;
  std::shared_ptr<Storage> storage_;
  Shape shape_;
  std::array<int64_t, kMaxDims> strides_{};  // in elements
  int64_t offset_ = 0;                        // in elements
  DType dtype_ = DType::F32;
};

}  // namespace troupe
