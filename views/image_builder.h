// A view's image (RGBA texels for a texture), built off the UI thread, so that folding a
// long run into a raster or a heatmap never holds up a frame (UI.md, STYLE.md habit 3).
//
// Each frame the view says which image it wants: a key naming everything the image
// depends on (run, layer, head, size, how much data) and a function that builds it from
// copies of that data. The builder's thread runs the newest such request; a request that
// was waiting behind a build is replaced, not queued. Until the new image is done the
// view keeps drawing the last one, and Texture() uploads a finished image on the UI
// thread, the only one that may touch the graphics API.
#pragma once

#include "views/views.h"

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kvscope {

struct Image {
    int width = 0, height = 0;
    std::vector<uint32_t> texels; // width * height, row by row
};

using ImageKey = std::vector<int64_t>;

class ImageBuilder {
public:
    ImageBuilder();
    ImageBuilder(const ImageBuilder&) = delete;
    ImageBuilder& operator=(const ImageBuilder&) = delete;
    ~ImageBuilder();

    // Whether the image `key` names is new (neither shown, being built nor waiting): then
    // the view calls Request with its build. Called every frame the view is drawn.
    bool Wants(const ImageKey& key);
    // `build` runs on the builder's thread: it must own what it reads.
    void Request(const ImageKey& key, std::function<Image()> build);
    // The texture of the latest finished image (null before the first), uploaded first when
    // it is new. UI thread only.
    ImTextureID Texture(UploadTextureFn upload);
    const ImageKey& ShownKey() const { return shown_; } // the key of the image Texture() shows
    bool Settled() const; // the image asked for last is the one shown

private:
    void Loop();

    mutable std::mutex mutex_;
    std::condition_variable wake_;
    std::thread thread_; // started by the first request
    bool quit_ = false;
    ImageKey wanted_;                // the newest request
    std::function<Image()> waiting_; // its build, when no build has taken it yet
    ImageKey done_key_;              // a finished image not yet uploaded
    Image done_;
    bool has_done_ = false;
    ImageKey shown_;             // UI thread only
    int last_request_frame_ = -1; // UI thread only
    ImTextureID texture_ = nullptr;
};

// Whether every ImageBuilder shows the image asked for last: a script waits for this
// before a screenshot, so that the shot shows what the views were asked for.
bool ImagesSettled();

} // namespace kvscope
