#include "views/image_builder.h"

#include <algorithm>

namespace kvscope {

namespace {

// Every builder alive, for ImagesSettled().
std::mutex g_builders_mutex;
std::vector<const ImageBuilder*> g_builders;

} // namespace

ImageBuilder::ImageBuilder() {
    std::lock_guard lock(g_builders_mutex);
    g_builders.push_back(this);
}

ImageBuilder::~ImageBuilder() {
    {
        std::lock_guard lock(g_builders_mutex);
        g_builders.erase(std::find(g_builders.begin(), g_builders.end(), this));
    }
    {
        std::lock_guard lock(mutex_);
        quit_ = true;
    }
    wake_.notify_one();
    if (thread_.joinable()) thread_.join();
}

bool ImageBuilder::Wants(const ImageKey& key) {
    last_request_frame_ = ImGui::GetFrameCount();
    return key != wanted_; // only this thread writes wanted_
}

void ImageBuilder::Request(const ImageKey& key, std::function<Image()> build) {
    {
        std::lock_guard lock(mutex_);
        wanted_ = key;
        waiting_ = std::move(build);
        if (!thread_.joinable()) thread_ = std::thread(&ImageBuilder::Loop, this);
    }
    wake_.notify_one();
}

void ImageBuilder::Loop() {
    std::unique_lock lock(mutex_);
    for (;;) {
        wake_.wait(lock, [&] { return quit_ || waiting_; });
        if (quit_) return;
        std::function<Image()> build = std::move(waiting_);
        waiting_ = nullptr;
        ImageKey key = wanted_;
        lock.unlock();
        Image image;
        try {
            image = build();
        } catch (const std::exception&) {
            image = Image{}; // out of memory, most likely: nothing to show, the view says what it can
        }
        lock.lock();
        done_ = std::move(image);
        done_key_ = std::move(key);
        has_done_ = true;
    }
}

ImTextureID ImageBuilder::Texture(UploadTextureFn upload) {
    std::unique_lock lock(mutex_);
    if (!has_done_) return texture_;
    Image image = std::move(done_);
    ImageKey key = std::move(done_key_);
    has_done_ = false;
    lock.unlock();
    if (!image.texels.empty()) texture_ = upload(texture_, image.width, image.height, image.texels.data());
    shown_ = std::move(key);
    return texture_;
}

bool ImageBuilder::Settled() const {
    // A builder whose view was not drawn in the last frame is not waited for.
    return shown_ == wanted_ || last_request_frame_ < ImGui::GetFrameCount() - 1;
}

bool ImagesSettled() {
    std::lock_guard lock(g_builders_mutex);
    return std::all_of(g_builders.begin(), g_builders.end(), [](const ImageBuilder* b) { return b->Settled(); });
}

} // namespace kvscope
